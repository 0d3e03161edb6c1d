"""Running an asyncio service process (notifier, scheduler): heartbeat, signals, clean stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import redis
import structlog

from shared.heartbeat import Heartbeat

log = structlog.get_logger(__name__)


async def run_until_signalled(
    name: str, redis_url: str, body: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> None:
    """Run ``body(stop)`` with a heartbeat until SIGTERM/SIGINT sets ``stop``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = redis.Redis.from_url(redis_url)
    heartbeat = Heartbeat(client, name)
    heartbeat.start()
    log.info("service.started")
    task = asyncio.create_task(body(stop))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=10)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
    finally:
        stopper.cancel()
        heartbeat.stop()
        client.close()
        log.info("service.stopped")
    if task in done and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
