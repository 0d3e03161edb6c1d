"""Per-minute counters of finished work, kept two hours: what the operator console charts.

Prometheus holds the same counts with labels and history; these counters let the console draw the
last hour without one. Each kind is a counter per UTC minute (``keys.activity``) that expires on its
own, so nothing ever sweeps them and a minute costs one small string key per kind.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Final

from shared import keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

# Two hours: the console charts one hour; the spare hour covers clocks that differ between hosts.
RETENTION_S: Final = 7200
MAX_MINUTES: Final = 120


class Activity(enum.StrEnum):
    """What is counted."""

    EMBEDDED = "embedded"  # documents embedded (by the embedder, per finished batch)
    DELIVERIES = "deliveries"  # webhook attempts finished (delivered or not)


def _minute(at_s: float) -> int:
    return int(at_s // 60)


def record(client: redis.Redis, kind: Activity, count: int, *, at_s: float | None = None) -> None:
    """Add ``count`` to this minute's counter of ``kind``."""
    if count <= 0:
        return
    key = keys.activity(kind.value, _minute(time.time() if at_s is None else at_s))
    with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, count)
        pipe.expire(key, RETENTION_S)
        pipe.execute()


async def arecord(client: aioredis.Redis, kind: Activity, count: int, *, at_s: float | None = None) -> None:
    """:func:`record` on an asyncio client."""
    if count <= 0:
        return
    key = keys.activity(kind.value, _minute(time.time() if at_s is None else at_s))
    async with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, count)
        pipe.expire(key, RETENTION_S)
        await pipe.execute()


async def series(
    client: aioredis.Redis, kinds: tuple[Activity, ...], minutes: int, *, now_s: float | None = None
) -> tuple[int, dict[Activity, list[int]]]:
    """The first minute (Unix minutes) and, per kind, its count in each of the last ``minutes`` minutes, oldest
    first (the current minute last), read in one round trip."""
    minutes = max(1, min(minutes, MAX_MINUTES))
    last = _minute(time.time() if now_s is None else now_s)
    first = last - minutes + 1
    wanted = [keys.activity(kind.value, m) for kind in kinds for m in range(first, last + 1)]
    raw = await client.mget(wanted)
    out: dict[Activity, list[int]] = {}
    for i, kind in enumerate(kinds):
        chunk = raw[i * minutes : (i + 1) * minutes]
        out[kind] = [int(v) if v is not None else 0 for v in chunk]
    return first, out
