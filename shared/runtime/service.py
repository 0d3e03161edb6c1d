"""Running an asyncio service process (notifier, scheduler): heartbeat, signals, clean stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import redis
import structlog

from shared.runtime.heartbeat import Heartbeat

log = structlog.get_logger(__name__)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first; returns whether it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def run_until_signalled(
    name: str,
    redis_url: str,
    body: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    heartbeat: bool = True,
    grace_s: float = 10.0,
    info: str = "{}",
) -> None:
    """Run ``body(stop)`` until SIGTERM/SIGINT sets ``stop``; ``body`` then gets ``grace_s`` to finish.

    With ``heartbeat`` the process beats as ``name``, saying ``info`` (a body that runs a Dramatiq
    worker beats itself).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = redis.Redis.from_url(redis_url)
    beat = Heartbeat(client, name, info=info) if heartbeat else None
    if beat is not None:
        beat.start()
    log.info("service.started")
    task = asyncio.create_task(body(stop))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=grace_s)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
    finally:
        stopper.cancel()
        if beat is not None:
            beat.stop()
        client.close()
        log.info("service.stopped")
    if task in done and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
