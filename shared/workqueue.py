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

from shared import tracing
from shared.keys import PREFIX, text

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


def _k(queue: str, *parts: str) -> str:
    return ":".join((PREFIX, "wq", queue, *parts))


def entries_key(queue: str) -> str:
    """Hash entry id -> entry JSON (waiting or claimed)."""
    return _k(queue, "entries")


def claims_key(queue: str) -> str:
    """Hash token message id -> claimed entry id (work in flight)."""
    return _k(queue, "claims")


def age_key(queue: str, level: int) -> str:
    """Sorted set entry id -> enqueue time (ms) of the entries waiting at ``level``."""
    return _k(queue, "age", str(level))


def ring_key(queue: str, level: int) -> str:
    """List of tenants with entries waiting at ``level``, in turn order."""
    return _k(queue, "ring", str(level))


def tenant_key(queue: str, level: int, tenant: str) -> str:
    """List of one tenant's waiting entry ids at ``level`` (FIFO)."""
    return _k(queue, "t", str(level), tenant)


def counter_key(queue: str) -> str:
    """Claims made so far (drives the anti-starvation turn)."""
    return _k(queue, "claimed")


def done_key(queue: str, bucket: int) -> str:
    """Entries finished in one 10-second bucket."""
    return _k(queue, "done", str(bucket))


# KEYS: entries. ARGV: prefix, queue, entry id, tenant, level, entry JSON, now (ms).
_PUSH = """
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 0 end
local base = ARGV[1] .. ':wq:' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[3], ARGV[6])
local tk = base .. ':t:' .. ARGV[5] .. ':' .. ARGV[4]
if redis.call('RPUSH', tk, ARGV[3]) == 1 then
  redis.call('RPUSH', base .. ':ring:' .. ARGV[5], ARGV[4])
end
redis.call('ZADD', base .. ':age:' .. ARGV[5], tonumber(ARGV[7]), ARGV[3])
return 1
"""

# KEYS: entries, claims, counter. ARGV: prefix, queue, message id, now (ms), levels, starve_every,
# starve_after_ms. Returns {entry id, entry JSON} or nil.
_CLAIM = """
local held = redis.call('HGET', KEYS[2], ARGV[3])
if held then
  local entry = redis.call('HGET', KEYS[1], held)
  if entry then return {held, entry} end
  redis.call('HDEL', KEYS[2], ARGV[3])
  return nil
end
local base = ARGV[1] .. ':wq:' .. ARGV[2]
local now = tonumber(ARGV[4])
local levels = tonumber(ARGV[5])
local oldest = {}
local best = nil
for level = 0, levels - 1 do
  local head = redis.call('ZRANGE', base .. ':age:' .. level, 0, 0, 'WITHSCORES')
  if head[2] then
    oldest[level] = tonumber(head[2])
    if best == nil then best = level end
  end
end
if best == nil then return nil end
local every = tonumber(ARGV[6])
if best > 0 and every > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n % every == 0 then
    local starving, since = nil, now - tonumber(ARGV[7])
    for level = best + 1, levels - 1 do
      if oldest[level] and oldest[level] <= since and (starving == nil or oldest[level] < oldest[starving]) then
        starving = level
      end
    end
    if starving then best = starving end
  end
end
local ring = base .. ':ring:' .. best
for _ = 1, redis.call('LLEN', ring) do
  local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  local tk = base .. ':t:' .. best .. ':' .. tenant
  local id = redis.call('LPOP', tk)
  if redis.call('LLEN', tk) == 0 then redis.call('LREM', ring, 1, tenant) end
  if id then
    redis.call('ZREM', base .. ':age:' .. best, id)
    local entry = redis.call('HGET', KEYS[1], id)
    if entry then
      redis.call('HSET', KEYS[2], ARGV[3], id)
      return {id, entry}
    end
  end
end
return nil
"""

# KEYS: entries, claims. ARGV: message id, done bucket key, bucket TTL (s). Finishes a claim.
_RELEASE = """
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], id)
redis.call('INCR', ARGV[2])
redis.call('EXPIRE', ARGV[2], tonumber(ARGV[3]))
return 1
"""

# KEYS: entries. ARGV: prefix, queue, entry id. Removes a *waiting* entry: 1 removed, 0 unknown,
# -1 claimed (in flight: its worker must notice the cancellation itself).
_REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[3])
if not raw then return 0 end
local entry = cjson.decode(raw)
local base = ARGV[1] .. ':wq:' .. ARGV[2]
local level = tostring(entry['level'])
if not redis.call('ZSCORE', base .. ':age:' .. level, ARGV[3]) then return -1 end
redis.call('ZREM', base .. ':age:' .. level, ARGV[3])
local tk = base .. ':t:' .. level .. ':' .. entry['tenant']
redis.call('LREM', tk, 1, ARGV[3])
if redis.call('LLEN', tk) == 0 then redis.call('LREM', base .. ':ring:' .. level, 1, entry['tenant']) end
redis.call('HDEL', KEYS[1], ARGV[3])
return 1
"""

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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _push_args(queue: str, entry: Entry) -> list[Any]:
    return [PREFIX, queue, entry.id, entry.tenant, entry.priority.level, entry.encode(), entry.enqueued_ms]


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
        return bool(self.client.eval(_PUSH, 1, entries_key(self.name), *_push_args(self.name, entry)) == 1)

    def claim(self, message_id: str) -> Entry | None:
        """The entry this token holds, else the best waiting entry (now held by it), else None."""
        keys_ = (entries_key(self.name), claims_key(self.name), counter_key(self.name))
        args = (PREFIX, self.name, message_id, now_ms(), LEVELS, self.starve_every, self.starve_after_ms)
        found = self.client.eval(_CLAIM, 3, *keys_, *args)
        if not found:
            return None
        entry_id, raw = found
        return Entry.decode(text(entry_id), raw)

    def release(self, message_id: str) -> bool:
        """Forget the token's claim and its entry: the work is finished (or dead-lettered)."""
        bucket = done_key(self.name, int(time.time()) // DONE_BUCKET_S)
        args = (message_id, bucket, 120)
        return bool(self.client.eval(_RELEASE, 2, entries_key(self.name), claims_key(self.name), *args) == 1)

    def remove(self, entry_id: str) -> int:
        """Take a waiting entry out: 1 removed, 0 not queued, -1 in flight."""
        return int(self.client.eval(_REMOVE, 1, entries_key(self.name), PREFIX, self.name, entry_id))

    def claimed_entry(self, message_id: str) -> Entry | None:
        """The entry a token holds, without claiming anything new."""
        entry_id = self.client.hget(claims_key(self.name), message_id)
        if entry_id is None:
            return None
        raw = self.client.hget(entries_key(self.name), entry_id)
        return Entry.decode(text(entry_id), raw) if raw is not None else None

    def in_flight(self) -> int:
        """Entries claimed by a token and not yet released."""
        return int(self.client.hlen(claims_key(self.name)))

    def waiting(self, *, older_than_ms: int = 0) -> int:
        """Entries waiting (not in flight), only those queued at least ``older_than_ms`` ago if given."""
        cutoff = now_ms() - older_than_ms
        with self.client.pipeline(transaction=False) as pipe:
            for level in range(LEVELS):
                pipe.zcount(age_key(self.name, level), "-inf", cutoff)
            return sum(int(n) for n in pipe.execute())


class AsyncWorkQueue:
    """The same queue for an asyncio Redis client (the gateway)."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.client = client
        self.name = name

    async def push(self, entry: Entry) -> bool:
        """Queue ``entry`` (no-op if already queued or in flight)."""
        moved = await self.client.eval(_PUSH, 1, entries_key(self.name), *_push_args(self.name, entry))
        return bool(moved == 1)

    async def remove(self, entry_id: str) -> int:
        """Take a waiting entry out: 1 removed, 0 not queued, -1 in flight."""
        return int(await self.client.eval(_REMOVE, 1, entries_key(self.name), PREFIX, self.name, entry_id))

    async def depth(self) -> QueueDepth:
        """Waiting entries per priority, in flight, the oldest wait, and recent throughput."""
        bucket = int(time.time()) // DONE_BUCKET_S
        buckets = [done_key(self.name, bucket - i) for i in range(60 // DONE_BUCKET_S)]
        async with self.client.pipeline(transaction=False) as pipe:
            for level in range(LEVELS):
                pipe.zcard(age_key(self.name, level))
            for level in range(LEVELS):
                pipe.zrange(age_key(self.name, level), 0, 0, withscores=True)
            pipe.hlen(claims_key(self.name))
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
