"""Applying writes to a collection's index: new segments, tombstones, and the next manifest.

Every accepted write (a batch or a delete) carries a per-collection ``write_seq`` assigned when the
gateway accepted it. The document map in Redis records, for each document id, the segment holding
its live version and the ``write_seq`` that put it there. A write only takes effect for documents
whose recorded ``write_seq`` is lower than its own, so:

- a batch redelivered after a crash changes nothing the second time (exactly-once effect);
- writes applied out of order still end in acceptance order (last writer wins).

Publishing happens under a per-collection Redis lock, and the LATEST pointer and the document map
move together in one Lua script that also checks the pointer is the one the new manifest builds on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from shared import catalog, jobs, keys, manifests, segments
from shared.constants import COLLECTION_LOCK_TTL_S
from shared.documents import decode_batch, decode_vectors
from shared.errors import Cancelled, StaleIndex
from shared.jobs import now
from shared.manifests import Manifest, SegmentRef

if TYPE_CHECKING:
    import redis

    from shared.catalog import Collection
    from shared.layout import CollectionRef
    from shared.storage import ObjectStore

log = structlog.get_logger(__name__)

DELETED = "-"

# KEYS: latest pointer, document map, job record. ARGV: expected version ('' = none), new version,
# then (document id, 'segment:seq') pairs. A cancelled job publishes nothing (-1); otherwise the
# job is marked published in the same step, so a cancellation can no longer win after this.
_ADVANCE = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[3], 'state') == 'cancelled' then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'published', ARGV[2]) end
return 1
"""


@dataclass(frozen=True)
class Outcome:
    """What a write did: the version now live, and whether this write published it."""

    version: str | None
    published: bool
    manifest: Manifest | None


def _parse_entry(raw: bytes | None) -> tuple[str, int] | None:
    if raw is None:
        return None
    segment, _, seq = raw.decode().rpartition(":")
    return segment, int(seq)


class Publisher:
    """Turns batches and deletes into manifests for one store and Redis."""

    def __init__(self, client: redis.Redis, store: ObjectStore) -> None:
        self.client = client
        self.store = store

    def current(self, ref: CollectionRef) -> Manifest | None:
        """The manifest LATEST points at, or None for an empty collection."""
        raw = self.client.get(keys.latest(ref.tenant, ref.name))
        return manifests.read(self.store, ref, raw.decode()) if raw else None  # type: ignore[union-attr]

    def add_batch(self, collection: Collection, batch_id: str, write_seq: int, job_id: str = "") -> Outcome:
        """Index a stored, embedded batch as one new segment (only its documents that are newest).

        Raises:
            Cancelled: job ``job_id`` was cancelled before the new version went live.
        """
        ref = collection.ref
        docs = decode_batch(self.store.get(ref.batch_key(batch_id)))
        vectors = decode_vectors(self.store.get(ref.vectors_key(batch_id)))
        with self._locked(ref):
            base = self.current(ref)
            entries = self._entries(ref, [d.id for d in docs])
            keep = [i for i, d in enumerate(docs) if (e := entries[d.id]) is None or e[1] < write_seq]
            if not keep:
                log.info("batch.superseded", batch_id=batch_id, collection=ref.name)
                return Outcome(base.version if base else None, False, base)
            kept_ids = [docs[i].id for i in keep]
            segment, files = segments.build(batch_id, vectors[keep], kept_ids, [docs[i].metadata for i in keep])
            segments.upload(self.store, ref, segment, files)
            replaced = {d: e[0] for d in kept_ids if (e := entries[d]) is not None and e[0] != DELETED}
            updates = {d: f"{segment.id}:{write_seq}" for d in kept_ids}
            return self._publish(ref, base, _tombstone(base, replaced), segment, updates, job_id)

    def delete(
        self, collection: Collection, document_ids: tuple[str, ...], write_seq: int, job_id: str = ""
    ) -> Outcome:
        """Tombstone documents; ids never seen are remembered as deleted so a late batch cannot revive them.

        Raises:
            Cancelled: job ``job_id`` was cancelled before the deletion took effect.
        """
        ref = collection.ref
        with self._locked(ref):
            base = self.current(ref)
            entries = self._entries(ref, list(document_ids))
            newer = {d for d, e in entries.items() if e is None or e[1] < write_seq}
            if not newer:
                return Outcome(base.version if base else None, False, base)
            doomed = {d: e[0] for d in newer if (e := entries[d]) is not None and e[0] != DELETED}
            updates = {d: f"{DELETED}:{write_seq}" for d in newer}
            if not doomed:
                # Nothing live to remove: record the deletes without a new version.
                if job_id and jobs.state_sync(self.client, job_id) is jobs.JobState.CANCELLED:
                    raise Cancelled(f"job {job_id} was cancelled")
                self.client.hset(keys.docmap(ref.tenant, ref.name), mapping=updates)  # type: ignore[arg-type]
                return Outcome(base.version if base else None, False, base)
            return self._publish(ref, base, _tombstone(base, doomed), None, updates, job_id)

    def _entries(self, ref: CollectionRef, ids: list[str]) -> dict[str, tuple[str, int] | None]:
        if not ids:
            return {}
        raw = self.client.hmget(keys.docmap(ref.tenant, ref.name), ids)
        return {i: _parse_entry(r) for i, r in zip(ids, raw, strict=True)}  # type: ignore[arg-type]

    def _publish(
        self,
        ref: CollectionRef,
        base: Manifest | None,
        kept: tuple[SegmentRef, ...],
        added: SegmentRef | None,
        updates: dict[str, str],
        job_id: str,
    ) -> Outcome:
        manifest = Manifest(
            tenant=ref.tenant,
            collection=ref.name,
            collection_id=ref.id,
            sequence=(base.sequence + 1) if base else 1,
            parent=base.version if base else None,
            created_at=now(),
            segments=(*kept, added) if added else kept,
        ).sealed()
        manifests.write(self.store, ref, manifest)
        args: list[Any] = [base.version if base else "", manifest.version]
        for doc_id, value in updates.items():
            args += [doc_id, value]
        job_key = keys.job(job_id) if job_id else keys.job("-")
        moved = self.client.eval(
            _ADVANCE, 3, keys.latest(ref.tenant, ref.name), keys.docmap(ref.tenant, ref.name), job_key, *args
        )
        if moved == -1:
            # The manifest and segment files stay unreferenced; cleanup removes them.
            raise Cancelled(f"job {job_id} was cancelled; {manifest.version} not published")
        if moved != 1:
            raise StaleIndex(f"{ref.name}: LATEST moved while publishing {manifest.version}")
        log.info("index.published", collection=ref.name, version=manifest.version, documents=manifest.documents)
        return Outcome(manifest.version, True, manifest)

    def _locked(self, ref: CollectionRef) -> Any:
        return self.client.lock(
            keys.collection_lock(ref.tenant, ref.name),
            timeout=COLLECTION_LOCK_TTL_S,
            blocking_timeout=COLLECTION_LOCK_TTL_S,
        )

    def drop(self, collection: Collection) -> int:
        """Delete every object of a collection incarnation (after the catalogue forgot it)."""
        if (live := catalog.get_sync(self.client, collection.tenant, collection.name)) and live.id == collection.id:
            return 0  # still live: refuse, this message must be stale
        removed = 0
        for key in list(self.store.list(collection.ref.prefix)):
            self.store.delete(key)
            removed += 1
        log.info("collection.dropped", collection=collection.name, objects=removed)
        return removed


def _tombstone(base: Manifest | None, doomed: dict[str, str]) -> tuple[SegmentRef, ...]:
    """The base's segments with ``doomed`` (document -> segment) added to their deleted lists."""
    if base is None:
        return ()
    by_segment: dict[str, list[str]] = {}
    for doc_id, segment_id in doomed.items():
        by_segment.setdefault(segment_id, []).append(doc_id)
    out = []
    for seg in base.segments:
        extra = by_segment.get(seg.id)
        if extra:
            seg = seg.model_copy(update={"deleted": tuple(sorted({*seg.deleted, *extra}))})
        if seg.live > 0:
            out.append(seg)
    return tuple(out)
