"""Notifier service: follows the event stream in its consumer group (deliveries build on this)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import structlog

from shared.bus import GroupConsumer
from shared.config import Settings
from shared.events import CloudEvent
from shared.heartbeat import instance_id
from shared.service import run_until_signalled
from shared.telemetry import configure_logging

log = structlog.get_logger(__name__)
NAME = "notifier"
GROUP = "notifier"


async def handle(event: CloudEvent) -> None:
    """Record each event; webhook and email delivery hook in here."""
    log.info("event.received", type=event.type, event_id=event.id, subject=event.subject)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Consume the stream until ``stop``."""
    client = aioredis.Redis.from_url(settings.require_redis_url(), socket_timeout=15)
    try:
        await GroupConsumer(client, GROUP, instance_id(), handle, block_ms=1_000).run(stop)
    finally:
        await client.aclose()


def main() -> None:
    """Run the notifier until SIGTERM."""
    settings = Settings()
    configure_logging(NAME, level=settings.log_level, json=settings.log_json)
    asyncio.run(run_until_signalled(NAME, settings.require_redis_url(), lambda stop: serve(settings, stop)))
