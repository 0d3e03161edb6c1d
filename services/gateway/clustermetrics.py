"""The deployment's queues, dead letters and workers as gauges on the gateway's ``/metrics``.

Read from Redis every few seconds in the background (never while ``/metrics`` is being scraped, so a
slow Redis cannot stall a scrape), and ``semaflow_redis_up`` says whether that read worked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from services.gateway.appkeys import CONTROL, METRICS, REDIS
from shared.runtime.service import pause

log = structlog.get_logger(__name__)

# Often enough for a backlog alert to see a trend within minutes; a handful of cheap Redis reads.
REFRESH_S: Final = 5.0
_PING_TIMEOUT_S: Final = 2.0


async def refresh(app: web.Application) -> None:
    """Read the queues and workers once into the gauges; mark Redis down if it does not answer."""
    gauges = app[METRICS].cluster
    try:
        await asyncio.wait_for(app[REDIS].ping(), _PING_TIMEOUT_S)
        control = app[CONTROL]
        workers = await control.workers()
        gauges.record(await control.queues(workers), workers)
    except Exception as exc:
        gauges.redis_up.set(0)
        log.warning("cluster_metrics.refresh_failed", error=str(exc))
        return
    gauges.redis_up.set(1)


async def _refresh_until(app: web.Application, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await refresh(app)
        await pause(stop, REFRESH_S)


async def cluster_gauges(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: keep the cluster gauges fresh while the app runs (after its Redis is up)."""
    stop = asyncio.Event()
    task = asyncio.create_task(_refresh_until(app, stop), name="cluster-metrics")
    yield
    stop.set()
    await task
