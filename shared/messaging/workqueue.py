"""Fair priority work queues on Redis, in front of Dramatiq.

Dramatiq's Redis broker keeps one FIFO list per queue; its actor ``priority`` only reorders a
worker's prefetch buffer. So semaflow does not let Dramatiq decide *what* runs next, only *that*
something runs: the sender stores the work as an **entry** here and sends one interchangeable
**token** message (``embed_next`` / ``index_next``). Whichever token a worker executes claims, in
one Lua script, the best entry at that moment:

1. **Priority**: the highest level with waiting work (critical > high > normal > low > bulk),
   across the whole queue, however many tokens wait in front.
2. **Anti-starvation**: every ``starve_every``-th claim that would go to a non-critical level is
   given instead to the lower level whose oldest entry has waited longest, once that wait exceeds
   ``starve_after_ms``. Lower levels therefore keep at least ``1/starve_every`` of the throughput
   while higher ones are saturated; critical work is never displaced.
3. **Tenant fairness**: within a level, tenants take turns (round robin), so one tenant's backlog
   never delays another tenant's batch by more than one batch per tenant.

The claim is recorded under the token's message id. Dramatiq redelivers the same message id after
a retry or after its worker died, and that execution resumes the entry it claimed; the entry is
released only when its work is done (or dead-lettered). Excess tokens find nothing and return.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from shared import keys, scripts
from shared.clock import now_ms
from shared.keys import text
from shared.messaging import tracing

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class Priority(StrEnum):
    """Priority levels, highest first."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BULK = "bulk"

    @property
    def level(self) -> int:
        """0 (critical) .. 4 (bulk)."""
        return _LEVELS.index(self)


_LEVELS: Final = tuple(Priority)
LEVELS: Final = len(_LEVELS)


# The queue's scripts (shared/lua/workqueue_*.lua): each names its keys, arguments and answer.
_PUSH: Final = scripts.get("workqueue_push")
_CLAIM: Final = scripts.get("workqueue_claim")
_RELEASE: Final = scripts.get("workqueue_release")
_REMOVE: Final = scripts.get("workqueue_remove")

DONE_BUCKET_S: Final = 10


@dataclass(frozen=True)
class Entry:
    """A unit of queued work: which job, whose, how urgent, the task's keyword arguments, and the
    trace it continues (whatever token ends up running it).
    """

    id: str
    tenant: str
    priority: Priority
    kwargs: dict[str, Any]
    enqueued_ms: int
    traceparent: str | None = None

    def encode(self) -> str:
        data: dict[str, Any] = {
            "tenant": self.tenant,
            "priority": self.priority.value,
            "level": self.priority.level,
            "kwargs": self.kwargs,
            "enqueued_ms": self.enqueued_ms,
        }
        traceparent = self.traceparent or tracing.current_traceparent()
        if traceparent:
            data["traceparent"] = traceparent
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, entry_id: str, raw: str | bytes) -> Entry:
        data = json.loads(raw)
        return cls(
            entry_id,
            data["tenant"],
            Priority(data["priority"]),
            data["kwargs"],
            int(data["enqueued_ms"]),
            data.get("traceparent"),
        )


@dataclass(frozen=True)
class QueueDepth:
    """What waits in one queue."""

    by_priority: dict[str, int]
    in_flight: int
    oldest_enqueued_ms: int | None
    processed_last_minute: int


def _templates(queue: str) -> tuple[str, str, str]:
    """The key templates the queue's scripts fill in: a level's age set and tenant ring, a tenant's list."""
    return (
        keys.wq_age(queue, keys.LEVEL),
        keys.wq_ring(queue, keys.LEVEL),
        keys.wq_tenant(queue, keys.LEVEL, keys.TENANT),
    )


def _push_args(queue: str, entry: Entry) -> list[Any]:
    return [*_templates(queue), entry.id, entry.tenant, entry.priority.level, entry.encode(), entry.enqueued_ms]


class WorkQueue:
    """One named queue (``embed``, ``index``) for a blocking Redis client (workers)."""

    def __init__(
        self, client: redis.Redis, name: str, *, starve_every: int = 10, starve_after_ms: int = 30_000
    ) -> None:
        self.client = client
        self.name = name
        self.starve_every = starve_every
        self.starve_after_ms = starve_after_ms

    def push(self, entry: Entry) -> bool:
        """Queue ``entry`` (no-op if an entry with its id is already queued or in flight)."""
        return bool(_PUSH.run(self.client, [keys.wq_entries(self.name)], _push_args(self.name, entry)) == 1)

    def claim(self, message_id: str) -> Entry | None:
        """The entry this token holds, else the best waiting entry (now held by it), else None."""
        keys_ = (keys.wq_entries(self.name), keys.wq_claims(self.name), keys.wq_claimed(self.name))
        args = (*_templates(self.name), message_id, now_ms(), LEVELS, self.starve_every, self.starve_after_ms)
        found = _CLAIM.run(self.client, keys_, args)
        if not found:
            return None
        entry_id, raw = found
        return Entry.decode(text(entry_id), raw)

    def release(self, message_id: str) -> bool:
        """Forget the token's claim and its entry: the work is finished (or dead-lettered)."""
        bucket = keys.wq_done(self.name, int(time.time()) // DONE_BUCKET_S)
        args = (message_id, bucket, 120)
        return bool(_RELEASE.run(self.client, [keys.wq_entries(self.name), keys.wq_claims(self.name)], args) == 1)

    def remove(self, entry_id: str) -> int:
        """Take a waiting entry out: 1 removed, 0 not queued, -1 in flight."""
        return int(_REMOVE.run(self.client, [keys.wq_entries(self.name)], [*_templates(self.name), entry_id]))

    def claimed_entry(self, message_id: str) -> Entry | None:
        """The entry a token holds, without claiming anything new."""
        entry_id = self.client.hget(keys.wq_claims(self.name), message_id)
        if entry_id is None:
            return None
        raw = self.client.hget(keys.wq_entries(self.name), entry_id)
        return Entry.decode(text(entry_id), raw) if raw is not None else None

    def in_flight(self) -> int:
        """Entries claimed by a token and not yet released."""
        return int(self.client.hlen(keys.wq_claims(self.name)))

    def waiting(self, *, older_than_ms: int = 0) -> int:
        """Entries waiting (not in flight), only those queued at least ``older_than_ms`` ago if given."""
        cutoff = now_ms() - older_than_ms
        with self.client.pipeline(transaction=False) as pipe:
            for level in range(LEVELS):
                pipe.zcount(keys.wq_age(self.name, level), "-inf", cutoff)
            return sum(int(n) for n in pipe.execute())


class AsyncWorkQueue:
    """The same queue for an asyncio Redis client (the gateway)."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.client = client
        self.name = name

    async def push(self, entry: Entry) -> bool:
        """Queue ``entry`` (no-op if already queued or in flight)."""
        moved = await _PUSH.arun(self.client, [keys.wq_entries(self.name)], _push_args(self.name, entry))
        return bool(moved == 1)

    async def remove(self, entry_id: str) -> int:
        """Take a waiting entry out: 1 removed, 0 not queued, -1 in flight."""
        return int(await _REMOVE.arun(self.client, [keys.wq_entries(self.name)], [*_templates(self.name), entry_id]))

    async def depth(self) -> QueueDepth:
        """Waiting entries per priority, in flight, the oldest wait, and recent throughput."""
        bucket = int(time.time()) // DONE_BUCKET_S
        buckets = [keys.wq_done(self.name, bucket - i) for i in range(60 // DONE_BUCKET_S)]
        async with self.client.pipeline(transaction=False) as pipe:
            for level in range(LEVELS):
                pipe.zcard(keys.wq_age(self.name, level))
            for level in range(LEVELS):
                pipe.zrange(keys.wq_age(self.name, level), 0, 0, withscores=True)
            pipe.hlen(keys.wq_claims(self.name))
            pipe.mget(buckets)
            out = await pipe.execute()
        counts = [int(n) for n in out[:LEVELS]]
        heads = [float(h[0][1]) for h in out[LEVELS : 2 * LEVELS] if h]
        done = sum(int(v) for v in out[-1] if v is not None)
        return QueueDepth(
            by_priority={p.value: counts[p.level] for p in Priority},
            in_flight=int(out[2 * LEVELS]),
            oldest_enqueued_ms=int(min(heads)) if heads else None,
            processed_last_minute=done,
        )
