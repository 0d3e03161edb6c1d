"""Reading the event stream back in tests."""

from __future__ import annotations

from typing import Any, TypeVar

import redis

from shared import keys
from shared.events import CloudEvent, EventData

E = TypeVar("E", bound=EventData)


def events_of(client: redis.Redis, model: type[E]) -> list[E]:
    """Every event of ``model``'s type on the stream, oldest first."""
    out: list[E] = []
    entries: Any = client.xrange(keys.EVENTS_STREAM)
    for _id, fields in entries:
        payload = CloudEvent.decode(fields[b"event"]).payload()
        if isinstance(payload, model):
            out.append(payload)
    return out
