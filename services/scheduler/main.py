"""Scheduler service: a process that joins the stack and stops cleanly (schedules build on this)."""

from __future__ import annotations

import asyncio

import structlog

from shared.config import Settings
from shared.service import run_until_signalled
from shared.telemetry import configure_logging

log = structlog.get_logger(__name__)
NAME = "scheduler"


async def serve(stop: asyncio.Event) -> None:
    """Idle until ``stop``; no schedules are declared yet."""
    await stop.wait()


def main() -> None:
    """Run the scheduler until SIGTERM."""
    settings = Settings()
    configure_logging(NAME, level=settings.log_level, json=settings.log_json)
    asyncio.run(run_until_signalled(NAME, settings.require_redis_url(), serve))
