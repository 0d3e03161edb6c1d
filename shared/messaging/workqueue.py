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

Every claim holds a **lease** that its worker renews while it works (:meth:`WorkQueue.holding`).
A claim whose lease ran out has no live work behind it — its worker died, or its token message
was lost (a Redis crash between a retry and its re-enqueue, say) — and :meth:`WorkQueue.reap`
puts its entry back at the front of its level, where the next token takes it. Every claim counts
one attempt of its entry, so retries and redeliveries are counted per entry, whatever token runs it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import structlog

from shared import keys, scripts
from shared.clock import now_ms
from shared.keys import text
from shared.messaging import tracing

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

log = structlog.get_logger(__name__)


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
_REAP: Final = scripts.get("workqueue_reap")

DONE_BUCKET_S: Final = 10
# A claim's lease unless told otherwise: a worker silent this long is dead (Settings.worker_dead_after_s).
DEFAULT_LEASE_MS: Final = 15_000


@dataclass(frozen=True)
class Entry:
    """A unit of queued work: which job, whose, how urgent, the task's keyword arguments, and the
    trace it continues (whatever token ends up running it). ``attempts`` (not stored with it) is how
    many times it has been claimed, as told by the claim that returned it.
    """

    id: str
    tenant: str
    priority: Priority
    kwargs: dict[str, Any]
    enqueued_ms: int
    traceparent: str | None = None
    attempts: int = 0

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
        self,
        client: redis.Redis,
        name: str,
        *,
        starve_every: int = 10,
        starve_after_ms: int = 30_000,
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> None:
        self.client = client
        self.name = name
        self.starve_every = starve_every
        self.starve_after_ms = starve_after_ms
        self.lease_ms = lease_ms

    def push(self, entry: Entry) -> bool:
        """Queue ``entry`` (no-op if an entry with its id is already queued or in flight)."""
        return bool(_PUSH.run(self.client, [keys.wq_entries(self.name)], _push_args(self.name, entry)) == 1)

    def claim(self, message_id: str) -> Entry | None:
        """The entry this token holds, else the best waiting entry (now held by it), else None.

        The claim's lease runs from now and the entry counts one more attempt. Prefer
        :meth:`holding`, which also renews the lease while the work runs.
        """
        keys_ = (
            keys.wq_entries(self.name),
            keys.wq_claims(self.name),
            keys.wq_claimed(self.name),
            keys.wq_leases(self.name),
            keys.wq_attempts(self.name),
        )
        args = (
            *_templates(self.name),
            message_id,
            now_ms(),
            LEVELS,
            self.starve_every,
            self.starve_after_ms,
            self.lease_ms,
        )
        found = _CLAIM.run(self.client, keys_, args)
        if not found:
            return None
        entry_id, raw, attempts = found
        return replace(Entry.decode(text(entry_id), raw), attempts=int(attempts))

    @contextmanager
    def holding(self, message_id: str) -> Iterator[Entry | None]:
        """Claim as :meth:`claim` does and renew the claim's lease until the block ends, however it ends.

        The claim itself outlives the block: :meth:`release` it when the work is done; a failure
        leaves it to the retry (or, once the lease runs out unrenewed, to :meth:`reap`).
        """
        entry = self.claim(message_id)
        if entry is None:
            yield None
            return
        keeper = _LeaseKeeper(self, message_id)
        keeper.start()
        try:
            yield entry
        finally:
            keeper.stop()

    def renew(self, message_id: str, *, for_ms: int | None = None) -> bool:
        """Push the token's lease to ``for_ms`` (default: one lease) from now; False if it holds no claim any more."""
        deadline = now_ms() + (self.lease_ms if for_ms is None else for_ms)
        return bool(self.client.zadd(keys.wq_leases(self.name), {message_id: deadline}, xx=True, ch=True))

    def release(self, message_id: str) -> bool:
        """Forget the token's claim and its entry: the work is finished (or dead-lettered)."""
        bucket = keys.wq_done(self.name, int(time.time()) // DONE_BUCKET_S)
        keys_ = (
            keys.wq_entries(self.name),
            keys.wq_claims(self.name),
            keys.wq_leases(self.name),
            keys.wq_attempts(self.name),
        )
        return bool(_RELEASE.run(self.client, keys_, (message_id, bucket, 120)) == 1)

    def reap(self, message_id: str = "") -> list[str]:
        """Put back at the front of their level the entries of claims whose lease ran out (or of
        ``message_id``'s claim, whatever its lease); returns their ids.
        """
        keys_ = (keys.wq_entries(self.name), keys.wq_claims(self.name), keys.wq_leases(self.name))
        back = _REAP.run(self.client, keys_, (*_templates(self.name), now_ms(), message_id))
        return [text(entry_id) for entry_id in back]

    def remove(self, entry_id: str) -> int:
        """Take a waiting entry out: 1 removed, 0 not queued, -1 in flight."""
        keys_ = (keys.wq_entries(self.name), keys.wq_attempts(self.name))
        return int(_REMOVE.run(self.client, keys_, [*_templates(self.name), entry_id]))

    def restore(self, entry_id: str) -> bool:
        """Queue again, in one step, a stored entry that is neither waiting nor claimed (it would never
        run: only a partial write leaves one); False if it was not stored.
        """
        raw = self.client.hget(keys.wq_entries(self.name), entry_id)
        if raw is None:
            return False
        entry = Entry.decode(entry_id, raw)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.wq_entries(self.name), entry_id)
            _PUSH.run(pipe, [keys.wq_entries(self.name)], _push_args(self.name, entry))
            pipe.execute()
        return True

    def claimed_entry(self, message_id: str) -> Entry | None:
        """The entry a token holds (with its attempts), without claiming anything new."""
        entry_id = self.client.hget(keys.wq_claims(self.name), message_id)
        if entry_id is None:
            return None
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.wq_entries(self.name), entry_id)
            pipe.hget(keys.wq_attempts(self.name), entry_id)
            raw, attempts = pipe.execute()
        if raw is None:
            return None
        return replace(Entry.decode(text(entry_id), raw), attempts=int(attempts or 0))

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


class _LeaseKeeper:
    """Renews one claim's lease every third of a lease from a daemon thread, until stopped."""

    def __init__(self, queue: WorkQueue, message_id: str) -> None:
        self.queue = queue
        self.message_id = message_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{queue.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.queue.lease_ms / 3000):
            try:
                if not self.queue.renew(self.message_id):
                    log.warning("queue.claim_lost", queue=self.queue.name, message_id=self.message_id)
                    return
            except Exception as exc:  # keep trying through a Redis blip; the lease covers three misses
                log.warning("queue.lease_renewal_failed", queue=self.queue.name, error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


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
        keys_ = (keys.wq_entries(self.name), keys.wq_attempts(self.name))
        return int(await _REMOVE.arun(self.client, keys_, [*_templates(self.name), entry_id]))

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
