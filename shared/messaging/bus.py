"""Redis Streams event bus: publish envelopes, consume them in groups or as a fan-out reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from shared import keys
from shared.errors import InvalidInput
from shared.messaging import tracing
from shared.messaging.events import CloudEvent

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Received:
    """An event as read from the stream, with its entry id (stamped by Redis's clock)."""

    entry_id: str
    event: CloudEvent

    @property
    def ms(self) -> int:
        """When Redis appended the entry, in milliseconds since the epoch."""
        return int(self.entry_id.split("-", 1)[0])


BatchHandler = Callable[[list[Received]], Awaitable[None]]

_FIELD: Final = b"event"


def _fields(event: CloudEvent) -> dict[str, bytes]:
    if event.traceparent is None:
        # The event continues the trace of whatever published it: its subscribers' spans hang off it.
        traceparent = tracing.current_traceparent()
        if traceparent is not None:
            event = event.model_copy(update={"traceparent": traceparent})
    return {"type": event.type.encode(), "event": event.encode()}


def _decode(entry_id: bytes, fields: dict[bytes, bytes]) -> CloudEvent | None:
    try:
        return CloudEvent.decode(fields[_FIELD])
    except (KeyError, InvalidInput) as exc:
        log.warning("bus.bad_entry", entry_id=entry_id.decode(), error=str(exc))
        return None


def publish(client: redis.Redis, event: CloudEvent, *, maxlen: int, stream: str = keys.EVENTS_STREAM) -> str:
    """Append an event to the stream (trimmed approximately to ``maxlen``); returns the entry id."""
    entry_id = client.xadd(stream, _fields(event), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return keys.text(entry_id) if entry_id else ""


async def apublish(client: aioredis.Redis, event: CloudEvent, *, maxlen: int, stream: str = keys.EVENTS_STREAM) -> str:
    """Async twin of :func:`publish`."""
    entry_id = await client.xadd(stream, _fields(event), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def last_entry_id(client: aioredis.Redis, stream: str = keys.EVENTS_STREAM) -> str:
    """Id of the newest entry (``0-0`` when the stream is empty); read it *before* loading state."""
    entries = await client.xrevrange(stream, count=1)
    return keys.text(entries[0][0]) if entries and entries[0][0] else "0-0"


async def tail(
    client: aioredis.Redis,
    after: str,
    *,
    stream: str = keys.EVENTS_STREAM,
    block_ms: int = 5_000,
    count: int = 100,
) -> AsyncIterator[CloudEvent | None]:
    """Yield every event after entry ``after``, forever: a fan-out reader (each caller sees all).

    Used where every process must see every event (each gateway replica swaps its own index).
    Yields None whenever ``block_ms`` passes without an event, so the caller can do periodic work.
    """
    position = after
    while True:
        reply: Any = await client.xread({stream: position}, count=count, block=block_ms)
        if not reply:
            yield None
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                position = entry_id.decode()
                event = _decode(entry_id, fields)
                if event is not None:
                    yield event


class GroupConsumer:
    """One consumer of a consumer group: at-least-once delivery, reclaims a dead peer's entries.

    The handler gets the events of one read at a time (up to ``count``), so it can batch its own
    Redis work. Handlers must be idempotent (dedupe by event id): entries are acknowledged only
    after the handler returned, so a crash in between delivers them again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        group: str,
        consumer: str,
        handler: BatchHandler,
        *,
        stream: str = keys.EVENTS_STREAM,
        block_ms: int = 5_000,
        count: int = 50,
        reclaim_idle_ms: int = 60_000,
        start_id: str = "0",
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.stream = stream
        self.block_ms = block_ms
        self.count = count
        self.reclaim_idle_ms = reclaim_idle_ms
        self.start_id = start_id

    async def ensure_group(self) -> None:
        """Create the group at ``start_id`` if it does not exist (and the stream, if needed).

        The default, the stream's start, means a group created after events were published still
        sees them (as far back as the stream was trimmed); handlers decide what is too old to act on.
        """
        import redis.exceptions

        try:
            await self.client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _handle(self, entries: list[Any]) -> None:
        if not entries:
            return
        batch = []
        for entry_id, fields in entries:
            if fields is None:  # deleted by trimming while pending
                continue
            event = _decode(entry_id, fields)
            if event is not None:
                batch.append(Received(keys.text(entry_id), event))
        if batch:
            await self.handler(batch)
        await self.client.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))

    async def reclaim(self) -> int:
        """Take over entries a dead consumer left pending longer than ``reclaim_idle_ms``."""
        claimed = 0
        start = "0-0"
        while True:
            reply: Any = await self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.reclaim_idle_ms, start_id=start, count=self.count
            )
            start, entries = reply[0], reply[1]
            await self._handle(entries)
            claimed += len(entries)
            if start in (b"0-0", "0-0"):
                return claimed

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set: first this consumer's own pending entries, then new ones."""
        await self.ensure_group()
        await self.reclaim()
        # Entries delivered to this consumer name before a restart but never acknowledged.
        reply: Any = await self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=10_000)
        for _s, entries in reply or []:
            await self._handle(entries)
        while not stop.is_set():
            reply = await self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.count, block=self.block_ms
            )
            for _s, entries in reply or []:
                await self._handle(entries)
