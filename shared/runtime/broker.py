"""The Dramatiq broker every service uses, with semaflow's retry policy and middleware."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

from shared import keys
from shared.runtime.task_telemetry import TaskTracing

if TYPE_CHECKING:
    from dramatiq import Broker, Middleware

    from shared.config import Settings


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
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        middleware=middleware,
        namespace=keys.DRAMATIQ_NAMESPACE,
        heartbeat_timeout=int(settings.worker_dead_after_s * 1000),
        maintenance_chance=10_000,
    )
