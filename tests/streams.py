"""Reading the event stream back in tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import redis

from shared import keys
from shared.messaging import bus
from shared.messaging.events import CloudEvent, EventData

if TYPE_CHECKING:
    import redis.asyncio as aioredis

E = TypeVar("E", bound=EventData)


async def publish(client: aioredis.Redis, data: EventData, subject: str | None = None) -> CloudEvent:
    """Publish ``data`` on the event stream the way the services do; returns the envelope."""
    event = CloudEvent.wrap(data, source="semaflow/test", subject=subject)
    await bus.apublish(client, event, maxlen=10_000)
    return event


def events_of(client: redis.Redis, model: type[E]) -> list[E]:
    """Every event of ``model``'s type on the stream, oldest first."""
    out: list[E] = []
    entries: Any = client.xrange(keys.EVENTS_STREAM)
    for _id, fields in entries:
        payload = CloudEvent.decode(fields[b"event"]).payload()
        if isinstance(payload, model):
            out.append(payload)
    return out
