"""Scheduler service: any number of replicas; the one holding the lease fires the schedules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog

from services.scheduler.leader import Clock, Scheduler, utcnow
from services.scheduler.metrics import SchedulerMetrics
from shared.config import Settings
from shared.priority import lower_priority
from shared.runtime import telemetry
from shared.runtime.broker import build_broker
from shared.runtime.metrics import beat_info, process_registry, serve_metrics
from shared.runtime.service import run_until_signalled

log = structlog.get_logger(__name__)
NAME = "scheduler"


@contextlib.asynccontextmanager
async def build(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    owner: str | None = None,
    metrics: SchedulerMetrics | None = None,
) -> AsyncIterator[Scheduler]:
    """A scheduler replica wired to Redis and the broker; both are closed when the block ends.

    Raises:
        ConfigurationError: a schedule in the settings is invalid.
    """
    redis_url = settings.require_redis_url()
    schedules = settings.schedule_table()
    client = aioredis.Redis.from_url(redis_url, health_check_interval=30, socket_timeout=15, socket_connect_timeout=5)
    broker = build_broker(settings, redis_url)
    try:
        yield Scheduler(
            client,
            broker,
            schedules,
            lease_ttl_s=settings.scheduler_lease_ttl_s,
            poll_s=settings.scheduler_poll_s,
            stream_maxlen=settings.stream_maxlen,
            clock=clock,
            owner=owner,
            metrics=metrics,
        )
    finally:
        broker.close()
        await client.aclose()


async def serve(settings: Settings, stop: asyncio.Event, metrics: SchedulerMetrics | None = None) -> None:
    """Compete for the lease and fire schedules until ``stop``."""
    async with build(settings, metrics=metrics) as scheduler:
        log.info("scheduler.started", schedules=sorted(scheduler.schedules), owner=scheduler.lease.owner)
        await scheduler.run(stop)


def main() -> None:
    """Run the scheduler until SIGTERM."""
    settings = Settings()
    telemetry.configure(NAME, settings)
    lower_priority(settings.background_nice)  # every thread so far; those started later inherit it
    schedules = settings.schedule_table()  # fail at start, not at the first tick, on an invalid schedule
    registry = process_registry()
    metrics = SchedulerMetrics(registry, sorted(schedules))
    server = serve_metrics(settings, registry)
    try:
        asyncio.run(
            run_until_signalled(
                NAME, settings.require_redis_url(), lambda stop: serve(settings, stop, metrics), info=beat_info(server)
            )
        )
    finally:
        if server is not None:
            server.stop()
