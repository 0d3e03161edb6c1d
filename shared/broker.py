"""The Dramatiq broker every service uses, with semaflow's retry policy and middleware."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

if TYPE_CHECKING:
    from dramatiq import Broker, Middleware

    from shared.config import Settings

# Dramatiq keys live beside semaflow's under one prefix, so one Redis can be inspected at a glance.
NAMESPACE = "semaflow-dq"


def build_broker(settings: Settings, redis_url: str, *, extra: list[Middleware] | None = None) -> Broker:
    """A Redis broker with bounded, jittered exponential retries (Dramatiq's backoff is jittered)."""
    middleware: list[Middleware] = [
        AgeLimit(),
        TimeLimit(time_limit=15 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        *(extra or []),
    ]
    client = redis.Redis.from_url(redis_url, health_check_interval=30)
    return RedisBroker(client=client, middleware=middleware, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
