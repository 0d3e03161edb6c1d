"""The Dramatiq broker every service uses, with semaflow's retry policy and middleware.

Dramatiq's Redis consumer polls: an empty queue is fetched from every ``worker_poll_ms`` or so, by every
consumer of every worker (each queue and its delay queue), which on an idle stack is most of the CPU it uses
and a poll interval of latency on every hop. Here each send also publishes the queue's name, and a consumer
that holds no message waits on that channel between fetches: it fetches as soon as something is sent, and
otherwise only every ``worker_idle_wait_ms`` (which still picks up what no send announced: messages
Dramatiq's maintenance hands back from a dead worker, or sent by a broker that does not publish). A consumer
holding messages (running, or delayed until their time) polls as before, so delayed messages are handled as
promptly as ever.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from shared import keys
from shared.runtime.task_telemetry import TaskTracing

if TYPE_CHECKING:
    from dramatiq import Broker, Message, Middleware
    from dramatiq.broker import MessageProxy

    from shared.config import Settings


def _closed(exc: redis.ConnectionError) -> ConnectionClosed:
    """The error Dramatiq's consumer thread expects for a lost connection (it then starts a new consumer)."""
    return ConnectionClosed(exc)  # type: ignore[no-untyped-call]


class WakingRedisBroker(RedisBroker):
    """A :class:`RedisBroker` whose sends wake the queue's idle consumers (see the module's docstring)."""

    def __init__(self, *, idle_wait_ms: int, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.idle_wait_ms = idle_wait_ms
        # Set once a worker of this broker begins to stop: its idle consumers then wait a poll interval at a
        # time, as Dramatiq's do, so they see their thread told to stop within one.
        self.stopping = threading.Event()
        self._consumers: weakref.WeakSet[_WakingConsumer] = weakref.WeakSet()

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        if signal == "worker_shutdown":
            self.stopping.set()
            for queue_name in {consumer.queue_name for consumer in list(self._consumers)}:  # out of their wait now
                with contextlib.suppress(redis.RedisError):
                    self.announce(queue_name)
        super().emit_before(signal, *args, **kwargs)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def announce(self, queue_name: str) -> None:
        """Wake the idle consumers of ``queue_name`` (a queue or a delay queue), in every process."""
        self.client.publish(keys.dramatiq_wake(queue_name), b"")

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent = super().enqueue(message, delay=delay)
        self.announce(sent.queue_name)
        return sent


class _WakingConsumer(_RedisConsumer):
    """Fetches like Dramatiq's consumer, but an idle one waits for a send to be announced, fetching anyway every
    ``idle_wait_ms``. A worker that begins to stop wakes its consumers (see ``WakingRedisBroker.emit_before``),
    so a stop is seen as promptly as by Dramatiq's own."""

    broker: WakingRedisBroker

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # Subscribed before the first fetch: whatever is sent after a fetch is announced to this consumer.
        self._wake = broker.client.pubsub(ignore_subscribe_messages=True)
        self._woken = False
        self._fetch_at = 0.0
        try:
            self._wake.subscribe(keys.dramatiq_wake(queue_name))
        except redis.ConnectionError as exc:
            self._wake.close()
            raise _closed(exc) from None
        broker._consumers.add(self)

    def __next__(self) -> MessageProxy | None:
        if self.message_cache or self.outstanding_message_count >= self.prefetch:
            return super().__next__()  # type: ignore[no-untyped-call, no-any-return]
        # Holding messages (running, or delayed until their time), it polls as Dramatiq's does; idle, only
        # when something was sent or its fallback poll is due.
        woken = self._announced()
        if woken or self.outstanding_message_count or time.monotonic() >= self._fetch_at:
            self._fetch_at = time.monotonic() + self.broker.idle_wait_ms / 1000
            try:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
            except redis.ConnectionError as exc:
                raise _closed(exc) from None
            if self.message_cache:
                return super().__next__()  # type: ignore[no-untyped-call, no-any-return]
        if self.outstanding_message_count or self.broker.stopping.is_set():
            self.misses, wait_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            wait_s = wait_ms / 1000
        else:
            wait_s = self._fetch_at - time.monotonic()
        self._woken = self._wait(wait_s)
        return None

    def _announced(self) -> bool:
        """Whether a send was announced since the last fetch (taking the announcements waiting, without
        blocking)."""
        woken, self._woken = self._woken, False
        try:
            while self._wake.get_message(timeout=0.0) is not None:
                woken = True
        except redis.ConnectionError as exc:
            raise _closed(exc) from None
        return woken

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a send to be announced; whether one was."""
        deadline = time.monotonic() + seconds
        try:
            # None also for what is no announcement (the subscription's confirmation, a health check's reply)
            while (left := deadline - time.monotonic()) > 0:
                if self._wake.get_message(timeout=left) is not None:
                    return True
        except redis.ConnectionError as exc:
            raise _closed(exc) from None
        return False

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand messages back to the queue (a stopping worker's unstarted ones), announced to other workers."""
        messages = list(messages)
        super().requeue(messages)  # type: ignore[no-untyped-call]
        if messages:
            with contextlib.suppress(redis.RedisError):
                self.broker.announce(self.queue_name)

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self._wake.close()
        super().close()


def build_broker(settings: Settings, redis_url: str, *, extra: list[Middleware] | None = None) -> Broker:
    """A Redis broker with bounded, jittered exponential retries (Dramatiq's backoff is jittered).

    ``extra`` middleware goes before ``Retries``: Dramatiq runs ``after_*`` hooks in reverse
    order, so theirs see the outcome ``Retries`` decided (``message.failed``).

    ``TimeLimit`` comes last, so its clock starts once every other ``before_*`` hook has run and
    stops before any ``after_*`` hook runs: a limit interrupts the actor, never the middleware that
    settles its outcome. It enforces nothing until the process emits ``process_boot`` (see
    :meth:`shared.runtime.worker.WorkerService.start`).
    """
    middleware: list[Middleware] = [
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        TaskTracing(),
        *(extra or []),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        TimeLimit(time_limit=settings.task_time_limit_s * 1000),
    ]
    client = redis.Redis.from_url(redis_url, health_check_interval=30)
    # A worker that stops beating for ``heartbeat_timeout`` is dead: its unacknowledged messages go
    # back to the queue at the next maintenance pass, which runs on ~1 % of broker commands.
    return WakingRedisBroker(
        idle_wait_ms=settings.worker_idle_wait_ms,
        client=client,
        middleware=middleware,
        namespace=keys.DRAMATIQ_NAMESPACE,
        heartbeat_timeout=int(settings.worker_dead_after_s * 1000),
        maintenance_chance=10_000,
    )
