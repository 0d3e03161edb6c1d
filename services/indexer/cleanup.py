"""Retention cleanup: delete stored objects nobody needs any more, never what the live index uses.

Per collection, under its lock (so no publish or rollback moves while it decides), an object is
deleted only if it is older than the retention and:

- a manifest: it is not the live one, not among the last ``keep_manifests`` published ones (the
  chain of parents from LATEST: the rollback targets);
- a segment: no kept manifest references it, nor any manifest younger than the retention;
- a batch (its documents and the vectors they came with) or its computed vectors: no job that is
  queued, running or can still be retried (failed, cancelled, dead; also dead letters) needs it, and
  no kept segment was built from it.

Leftovers of cancelled jobs and of lost publishes (a manifest and segment written, the pointer
never moved) are in none of those sets and go once they are older than the retention. Manifests
are deleted before segments, so no manifest ever names a missing segment; removed versions are
recorded so a rollback to one answers that it was removed, not that it never existed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from shared import clock, keys
from shared.errors import ObjectNotFound
from shared.index import manifests
from shared.records import catalog, jobs

if TYPE_CHECKING:
    import redis

    from services.indexer.publishing import Publisher
    from shared.index.layout import CollectionRef
    from shared.index.manifests import Manifest
    from shared.index.storage import ObjectStore, StoredObject
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)

# Job states whose batch may be needed again: to run, or to retry.
_NEEDS_BATCH = frozenset(jobs.ACTIVE | jobs.RETRYABLE)
_PAGE = 500
# Removed versions remembered per collection (so a rollback to one says "removed"); older ones answer
# "does not exist". Bounded so a busy collection's history cannot grow Redis without end.
REMEMBER_REMOVED = 10_000


@dataclass
class Removed:
    """What a cleanup removed, by kind of object."""

    counts: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    versions: list[str] = field(default_factory=list)

    def add(self, other: Removed) -> None:
        self.counts.update(other.counts)
        self.bytes += other.bytes
        self.versions += other.versions

    def summary(self) -> str:
        """One line for logs and the schedule's outcome."""
        parts = [f"{self.counts[k]} {k}" for k in ("manifests", "segments", "batches", "vectors", "other")]
        return f"removed {', '.join(parts)} files ({self.bytes} bytes)"


def _kind(ref: CollectionRef, key: str) -> tuple[str, str]:
    """(kind, name) of an object key: ``manifests``/version, ``segments``/id, ``batches``/id, ``vectors``/id."""
    rest = key[len(ref.prefix) :]
    kind, _, tail = rest.partition("/")
    name = tail.split("/", 1)[0]
    for suffix in (".json", ".jsonl.gz", ".vectors.npy", ".npy"):
        name = name.removesuffix(suffix)
    return (kind if kind in ("manifests", "segments", "batches", "vectors") else "other"), name


class Cleaner:
    """Deletes what no live, recent or retryable thing needs."""

    def __init__(
        self,
        client: redis.Redis,
        store: ObjectStore,
        publisher: Publisher,
        *,
        retention_s: int,
        keep_manifests: int,
        clock: Callable[[], datetime] = lambda: clock.now(),
    ) -> None:
        self.client = client
        self.store = store
        self.publisher = publisher
        self.retention = timedelta(seconds=retention_s)
        self.keep_manifests = keep_manifests
        self.clock = clock

    def run(self, tenant: str | None = None) -> Removed:
        """Clean every collection (of ``tenant``, or of every tenant)."""
        total = Removed()
        for name in [tenant] if tenant else catalog.tenants(self.client):
            needed = self.needed_batches(name)
            for collection in catalog.list_all(self.client, name):
                total.add(self.collection(collection, needed))
        log.info("cleanup.done", summary=total.summary(), **total.counts)
        return total

    def needed_batches(self, tenant: str) -> set[str]:
        """Batch ids of the tenant's jobs that may still run or be retried, and of its dead letters."""
        needed: set[str] = set()
        job_ids = self._members(keys.tenant_jobs(tenant))
        for start in range(0, len(job_ids), _PAGE):
            page = job_ids[start : start + _PAGE]
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in page:
                    pipe.hmget(keys.job(job_id), ["state", "batch_id"])
                rows: list[Any] = pipe.execute()
            for state, batch_id in rows:
                if state is not None and batch_id and keys.text(state) in _NEEDS_BATCH:
                    needed.add(keys.text(batch_id))
        letter_ids = self._members(keys.dead_letters(tenant))
        for start in range(0, len(letter_ids), _PAGE):
            raws: list[Any] = self.client.mget([keys.dead_letter(i) for i in letter_ids[start : start + _PAGE]])
            for raw in raws:
                if raw and (batch_id := json.loads(raw).get("arguments", {}).get("batch_id")):
                    needed.add(str(batch_id))
        return needed

    def _members(self, key: str) -> list[str]:
        members: list[bytes] = self.client.zrange(key, 0, -1)  # type: ignore[assignment]
        return [keys.text(m) for m in members]

    def collection(self, collection: Collection, needed: set[str]) -> Removed:
        """Clean one collection, holding its lock while it decides and deletes."""
        ref = collection.ref
        cutoff = self.clock() - self.retention
        with self.publisher.locked(ref) as lock:
            if (live := catalog.get(self.client, ref.tenant, ref.name)) is None or live.id != ref.id:
                return Removed()  # deleted meanwhile: dropping it is the drop task's job
            objects = list(self.store.scan(ref.prefix))
            kept = self._kept_manifests(ref, objects, cutoff)
            referenced = {seg.id for m in kept.values() for seg in m.segments}
            doomed: dict[str, list[StoredObject]] = {"manifests": [], "segments": [], "batches": [], "vectors": []}
            protected = {"manifests": kept.keys(), "segments": referenced, "batches": needed | referenced}
            protected["vectors"] = protected["batches"]
            for obj in objects:
                kind, name = _kind(ref, obj.key)
                if kind != "other" and obj.modified < cutoff and name not in protected[kind]:
                    doomed[kind].append(obj)
            removed = self._delete(ref, doomed, lock)
        if removed.counts:
            log.info("cleanup.collection", tenant=ref.tenant, collection=ref.name, summary=removed.summary())
        return removed

    def _kept_manifests(self, ref: CollectionRef, objects: list[StoredObject], cutoff: datetime) -> dict[str, Manifest]:
        """The live manifest, the last ``keep_manifests`` of its chain, and every manifest younger than the cutoff."""
        kept: dict[str, Manifest] = {}
        raw = self.client.get(keys.latest(ref.tenant, ref.name))
        version = keys.text(raw) if isinstance(raw, bytes | str) else None
        while version is not None and len(kept) < self.keep_manifests:
            try:
                manifest = manifests.read(self.store, ref, version)
            except ObjectNotFound:
                break  # older history was removed by an earlier cleanup
            kept[version] = manifest
            version = manifest.parent
        for obj in objects:
            kind, name = _kind(ref, obj.key)
            if kind == "manifests" and obj.modified >= cutoff and name not in kept:
                kept[name] = manifests.read(self.store, ref, name)
        return kept

    def _delete(self, ref: CollectionRef, doomed: dict[str, list[StoredObject]], lock: Any) -> Removed:
        removed = Removed()
        for kind in ("manifests", "segments", "batches", "vectors"):  # manifests first: none names a missing segment
            for obj in doomed[kind]:
                if sum(removed.counts.values()) % _PAGE == _PAGE - 1:
                    lock.reacquire()  # many deletes (on S3, one request each) must not outlive the lock
                self.store.delete(obj.key)
                removed.counts[kind] += 1
                removed.bytes += obj.size
                if kind == "manifests":
                    removed.versions.append(_kind(ref, obj.key)[1])
        if removed.versions:
            key = keys.removed_versions(ref.tenant, ref.name)
            self.client.zadd(key, dict.fromkeys(removed.versions, int(self.clock().timestamp() * 1000)))
            self.client.zremrangebyrank(key, 0, -REMEMBER_REMOVED - 1)
        return removed
