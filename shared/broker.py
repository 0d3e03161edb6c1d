"""The Dramatiq broker every service uses, with semaflow's retry policy and middleware."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from redis.exceptions import NoScriptError

from shared.scriptbatch import ScriptBatcher, evalsha, run_packed
from shared.task_telemetry import TaskTracing

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from dramatiq import Broker, Message, Middleware

    from shared.config import Settings

log = structlog.get_logger(__name__)

# Dramatiq keys live beside semaflow's under one prefix, so one Redis can be inspected at a glance.
NAMESPACE = "semaflow-dq"
# Acknowledgements sent in one round trip at most (a bound on one write's size).
_ACK_BATCH: Final = 500
# After a failed round trip, the acknowledgements are tried again after this long.
_ACK_RETRY_S: Final = 1.0


def queue_lists(queue: str) -> tuple[str, str]:
    """Dramatiq's Redis lists of ``queue``: ready messages, and delayed ones (retries in back-off)."""
    return f"{NAMESPACE}:{queue}", f"{NAMESPACE}:{queue}.DQ"


def queue_messages(queue: str) -> str:
    """Dramatiq's Redis hash of ``queue``'s stored messages: queued, or fetched and not yet acknowledged."""
    return f"{queue_lists(queue)[0]}.msgs"


def _dispatch_args(broker: RedisBroker, command: str, queue: str, *args: Any) -> tuple[Any, ...]:
    """The arguments of Dramatiq's ``dispatch`` script (its one key: the namespace) for ``command`` on
    ``queue``, without queue maintenance (the broker's own calls, every worker's fetches, run it)."""
    now = int(time.time() * 1000)
    # command, now, queue, worker id, heartbeat timeout, dead-letter TTL, maintenance, its unpack size
    return (command, now, queue, broker.broker_id, broker.heartbeat_timeout, broker.dead_message_ttl, 0, 0, *args)


def ack_patterns(queue: str) -> tuple[str, str]:
    """SCAN patterns of the per-worker sets of fetched, unacknowledged messages: ready, delayed."""
    return f"{NAMESPACE}:__acks__.*.{queue}", f"{NAMESPACE}:__acks__.*.{queue}.DQ"


def build_broker(
    settings: Settings, redis_url: str, *, extra: list[Middleware] | None = None, background_acks: bool = False
) -> Broker:
    """A Redis broker with bounded, jittered exponential retries (Dramatiq's backoff is jittered).

    ``extra`` middleware goes before ``Retries``: Dramatiq runs ``after_*`` hooks in reverse
    order, so theirs see the outcome ``Retries`` decided (``message.failed``). ``background_acks``
    gives a :class:`BackgroundAckBroker`, for workers that process hundreds of short messages a second.
    """
    middleware: list[Middleware] = [
        AgeLimit(),
        TimeLimit(time_limit=settings.task_time_limit_s * 1000),
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
    ]
    client = redis.Redis.from_url(redis_url, health_check_interval=30)
    # A worker that stops beating for ``heartbeat_timeout`` is dead: its unacknowledged messages go
    # back to the queue at the next maintenance pass, which runs on ~1 % of broker commands.
    kind = BackgroundAckBroker if background_acks else RedisBroker
    return kind(  # type: ignore[no-untyped-call]
        client=client,
        middleware=middleware,
        namespace=NAMESPACE,
        heartbeat_timeout=int(settings.worker_dead_after_s * 1000),
        maintenance_chance=10_000,
    )


class BackgroundAckBroker(RedisBroker):
    """Dramatiq's Redis broker, whose worker threads hand their acknowledgements to a background thread.

    Dramatiq acknowledges each message with its own round trip from the worker thread that ran it,
    which then waits: for a notifier's deliveries (each handed over to the event loop in a few
    microseconds) those waits, and the threads they wake, cost more than the work. Here the worker
    thread queues the acknowledgement and takes its next message; one thread sends all that are
    queued in one round trip (Dramatiq's own ``dispatch`` script, once per message). An
    acknowledgement not yet sent when the process dies leaves its message to be delivered again,
    as when a process dies just before acknowledging: the tasks this serves must be idempotent.
    :meth:`close` sends what is queued.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._acks: list[tuple[str, str]] = []
        self._acks_changed = threading.Condition()
        self._ack_thread: threading.Thread | None = None
        self._closing = False

    def do_ack(self, queue_name: str, message_id: str) -> None:
        """Queue the acknowledgement of ``message_id`` (called by ``Consumer.ack`` in place of a round trip)."""
        with self._acks_changed:
            if self._ack_thread is None:
                self._ack_thread = threading.Thread(target=self._send_acks_forever, name="dramatiq-acks", daemon=True)
                self._ack_thread.start()
            self._acks.append((queue_name, message_id))
            self._acks_changed.notify()

    def _send_acks_forever(self) -> None:
        while True:
            with self._acks_changed:
                while not self._acks and not self._closing:
                    self._acks_changed.wait()
                batch, self._acks = self._acks[:_ACK_BATCH], self._acks[_ACK_BATCH:]
                if not batch:
                    return  # closing, and nothing left
            try:
                self._send_acks(batch)
            except Exception as exc:  # Redis is away (or worse): keep them, and try again
                log.warning("broker.acks_failed", acks=len(batch), error=str(exc))
                with self._acks_changed:
                    self._acks[:0] = batch
                    if self._closing:
                        return  # close() says what is left
                time.sleep(_ACK_RETRY_S)

    def _send_acks(self, batch: list[tuple[str, str]], *, loaded: bool = False) -> None:
        script = self.scripts["dispatch"]
        packed = b"".join(
            evalsha(script.sha, (self.namespace,), _dispatch_args(self, "ack", queue, message_id))
            for queue, message_id in batch
        )
        errors = [r for r in run_packed(self.client, packed, len(batch)) if isinstance(r, Exception)]
        if not loaded and any(isinstance(e, NoScriptError) for e in errors):  # Redis restarted or was flushed
            self.client.script_load(script.script)
            self._send_acks(batch, loaded=True)  # acknowledging twice is harmless
        elif errors:
            raise errors[0]

    def close(self) -> None:
        """Send the queued acknowledgements (for a few seconds at most), then close."""
        with self._acks_changed:
            self._closing = True
            self._acks_changed.notify()
            thread = self._ack_thread
        if thread is not None:
            thread.join(timeout=5)
        if self._acks:
            log.warning("broker.acks_unsent", acks=len(self._acks))
        super().close()


class AsyncSender:
    """Enqueues Dramatiq messages from an event loop without a thread or a round trip per message.

    On the Redis broker each message goes through Dramatiq's own ``dispatch`` script, exactly as
    :meth:`RedisBroker.enqueue` sends it (the same middleware hooks, a fresh ``redis_message_id``),
    but through ``batcher``: messages sent in the same turn of the loop, and any other script calls
    made in it, share one round trip. Another broker gets its messages through :meth:`Broker.enqueue`
    on a thread.
    """

    def __init__(self, broker: Broker, client: aioredis.Redis, batcher: ScriptBatcher | None = None) -> None:
        self.broker = broker
        self._batch = batcher or ScriptBatcher(client)
        self._dispatch = (
            client.register_script(broker.scripts["dispatch"].script) if isinstance(broker, RedisBroker) else None
        )

    async def send(self, messages: Sequence[Message[Any]]) -> None:
        """Enqueue ``messages`` (each at once: no delay).

        Raises:
            redis.RedisError: Redis could not be reached; some of the messages may have been sent.
        """
        broker = self.broker
        if not isinstance(broker, RedisBroker) or self._dispatch is None:
            await asyncio.to_thread(lambda: [broker.enqueue(m) for m in messages])
            return
        sent = [m.copy(options={"redis_message_id": str(uuid.uuid4())}) for m in messages]
        calls = []
        for message in sent:
            broker.emit_before("enqueue", message, None)
            args = _dispatch_args(
                broker, "enqueue", message.queue_name, message.options["redis_message_id"], message.encode()
            )
            calls.append(self._batch.call(self._dispatch, (broker.namespace,), args))
        await asyncio.gather(*calls)
        for message in sent:
            broker.emit_after("enqueue", message, None)
