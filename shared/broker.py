"""The Dramatiq broker every service uses, with semaflow's retry policy and middleware."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
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

from shared.scriptbatch import ScriptBatcher
from shared.task_telemetry import TaskTracing

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from dramatiq import Broker, Message, Middleware

    from shared.config import Settings

# Dramatiq keys live beside semaflow's under one prefix, so one Redis can be inspected at a glance.
NAMESPACE = "semaflow-dq"


def queue_lists(queue: str) -> tuple[str, str]:
    """Dramatiq's Redis lists of ``queue``: ready messages, and delayed ones (retries in back-off)."""
    return f"{NAMESPACE}:{queue}", f"{NAMESPACE}:{queue}.DQ"


def ack_patterns(queue: str) -> tuple[str, str]:
    """SCAN patterns of the per-worker sets of fetched, unacknowledged messages: ready, delayed."""
    return f"{NAMESPACE}:__acks__.*.{queue}", f"{NAMESPACE}:__acks__.*.{queue}.DQ"


def build_broker(settings: Settings, redis_url: str, *, extra: list[Middleware] | None = None) -> Broker:
    """A Redis broker with bounded, jittered exponential retries (Dramatiq's backoff is jittered).

    ``extra`` middleware goes before ``Retries``: Dramatiq runs ``after_*`` hooks in reverse
    order, so theirs see the outcome ``Retries`` decided (``message.failed``).
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
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        middleware=middleware,
        namespace=NAMESPACE,
        heartbeat_timeout=int(settings.worker_dead_after_s * 1000),
        maintenance_chance=10_000,
    )


class AsyncSender:
    """Enqueues Dramatiq messages from an event loop without a thread or a round trip per message.

    On the Redis broker each message goes through Dramatiq's own ``dispatch`` script, exactly as
    :meth:`RedisBroker.enqueue` sends it (the same middleware hooks, a fresh ``redis_message_id``),
    but through ``batcher``: messages sent in the same turn of the loop, and any other script calls
    made in it, share one round trip. Queue maintenance is left to the broker's own calls (every
    worker's fetches run it). Another broker gets its messages through :meth:`Broker.enqueue`
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
            args = (
                "enqueue",
                int(time.time() * 1000),
                message.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                0,  # no maintenance from here
                0,  # (the unpack size only bounds maintenance and fetches)
                message.options["redis_message_id"],
                message.encode(),
            )
            calls.append(self._batch.call(self._dispatch, (broker.namespace,), args))
        await asyncio.gather(*calls)
        for message in sent:
            broker.emit_after("enqueue", message, None)
