"""Applying writes to a collection's index: new segments, tombstones, and the next manifest.

Every accepted write (a batch or a delete) carries a per-collection ``write_seq`` assigned when the
gateway accepted it. The document map in Redis records, for each document id, the segment holding
its live version and the ``write_seq`` that put it there. A write only takes effect for documents
whose recorded ``write_seq`` is lower than its own, so:

- a batch redelivered after a crash changes nothing the second time (exactly-once effect);
- writes applied out of order still end in acceptance order (last writer wins).

Publishing happens under a per-collection Redis lock, and the LATEST pointer and the document map
move together in one Lua script that also checks the pointer is the one the new manifest builds on.

A rollback is a write too: it publishes an earlier manifest's content as the next version, rebuilds
the document map to match, and raises the collection's write floor to its own ``write_seq``, so a
write accepted before the rollback but applied after it has no effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from shared import keys, scripts
from shared.clock import now
from shared.constants import COLLECTION_LOCK_TTL_S
from shared.errors import Cancelled, ObjectNotFound, PermanentError, StaleIndex
from shared.index import manifests, segments
from shared.index.approximate import RecallTarget
from shared.index.documents import decode_batch, decode_vectors
from shared.index.manifests import Manifest, SegmentRef
from shared.messaging import bus
from shared.messaging.events import CloudEvent, IndexPublished
from shared.records import catalog, jobs

if TYPE_CHECKING:
    import redis
    from prometheus_client import Counter

    from shared.index.layout import CollectionRef
    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)
SOURCE = "semaflow/indexer"  # the CloudEvents source of everything the indexer announces


def announce(
    client: redis.Redis, tenant: str, collection: str, version: str, documents: int, segments: int, *, maxlen: int
) -> None:
    """Emit ``index.published``: every gateway swaps to ``version``, the notifier tells subscribers."""
    event = IndexPublished(
        tenant=tenant, collection=collection, version=version, documents=documents, segments=segments
    )
    bus.publish(client, CloudEvent.wrap(event, source=SOURCE, subject=collection), maxlen=maxlen)


DELETED = "-"

# Move LATEST and the document map, unless LATEST moved meanwhile (0) or the job was cancelled (-1);
# a rollback replaces the document map whole and raises the write floor.
_ADVANCE: Final = scripts.get("index_advance")
_REPLACE: Final = scripts.get("index_replace")
# A compaction's publish: LATEST and the segment moves, never the document map.
_COMPACT: Final = scripts.get("index_compact")
# Document-map entries read or written per Redis command: a command on a million entries would hold
# Redis (every service's queue and events) for seconds.
DOCMAP_CHUNK: Final = 5000


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

    def __init__(
        self,
        client: redis.Redis,
        store: ObjectStore,
        *,
        published: Counter | None = None,
        lock_ttl_s: float = COLLECTION_LOCK_TTL_S,
        target: RecallTarget | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.published = published  # counts every version this process makes live
        self.lock_ttl_s = lock_ttl_s  # a lock whose holder died is free again after this
        self.target = target or RecallTarget()  # what an int8 batch segment must show, else it is float32

    def current(self, ref: CollectionRef) -> Manifest | None:
        """The manifest LATEST points at, or None for an empty collection."""
        raw = self.client.get(keys.latest(ref.tenant, ref.name))
        return manifests.read(self.store, ref, raw.decode()) if raw else None  # type: ignore[union-attr]

    def floor(self, ref: CollectionRef) -> int:
        """The write sequence of the collection's last rollback (0: none); older writes have no effect."""
        raw = self.client.get(keys.write_floor(ref.tenant, ref.name))
        return int(raw) if raw else 0

    def add_batch(self, collection: Collection, batch_id: str, write_seq: int, job_id: str = "") -> Outcome:
        """Index a stored, embedded batch as one new segment (only its documents that are newest).

        Raises:
            Cancelled: job ``job_id`` was cancelled before the new version went live.
        """
        ref = collection.ref
        docs = decode_batch(self.store.get(ref.batch_key(batch_id))).documents
        vectors = decode_vectors(self.store.get(ref.vectors_key(batch_id)))
        with self.locked(ref):
            base = self.current(ref)
            entries = self.entries(ref, [d.id for d in docs])
            newer = write_seq > self.floor(ref)
            keep = [i for i, d in enumerate(docs) if newer and ((e := entries[d.id]) is None or e[1] < write_seq)]
            if not keep:
                log.info("batch.superseded", batch_id=batch_id, collection=ref.name)
                return Outcome(base.version if base else None, False, base)
            kept_ids = [docs[i].id for i in keep]
            segment, files = segments.build(
                batch_id,
                vectors[keep],
                kept_ids,
                [docs[i].metadata for i in keep],
                texts=[docs[i].text for i in keep],
                quantization=collection.quantization,
                target=self.target,
            )
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
        with self.locked(ref):
            base = self.current(ref)
            entries = self.entries(ref, list(document_ids))
            after_floor = write_seq > self.floor(ref)
            newer = {d for d, e in entries.items() if after_floor and (e is None or e[1] < write_seq)}
            if not newer:
                return Outcome(base.version if base else None, False, base)
            doomed = {d: e[0] for d in newer if (e := entries[d]) is not None and e[0] != DELETED}
            updates = {d: f"{DELETED}:{write_seq}" for d in newer}
            if not doomed:
                # Nothing live to remove: record the deletes without a new version.
                if job_id and jobs.state(self.client, job_id) is jobs.JobState.CANCELLED:
                    raise Cancelled(f"job {job_id} was cancelled")
                self.client.hset(keys.docmap(ref.tenant, ref.name), mapping=updates)  # type: ignore[arg-type]
                return Outcome(base.version if base else None, False, base)
            return self._publish(ref, base, _tombstone(base, doomed), None, updates, job_id)

    def rollback(self, collection: Collection, version: str, write_seq: int, job_id: str = "") -> Outcome:
        """Publish the content of earlier manifest ``version`` as the next version (append-only history).

        Documents written after ``version`` leave the index and the document map records them as
        deleted at this write, so sending them again works; a write accepted after this rollback but
        applied before it keeps its effect.

        Raises:
            PermanentError: ``version`` does not exist (never, or removed by cleanup) or is not this collection's.
            Cancelled: job ``job_id`` was cancelled before the rollback went live.
        """
        ref = collection.ref
        target = self._rollback_target(ref, version)
        rows = {seg.id: self._ids(ref, seg, version) for seg in target.segments}
        with self.locked(ref):
            base = self.current(ref)
            if write_seq <= self.floor(ref):
                return Outcome(base.version if base else None, False, base)
            docmap = self._docmap(ref)
            newer = {d: e for d, e in docmap.items() if e[1] > write_seq}
            kept = self._rolled_back_segments(ref, target, rows, base, newer)
            updates = {d: f"{e[0]}:{e[1]}" for d, e in newer.items()}
            for seg in target.segments:
                gone = set(seg.deleted)
                for doc in rows[seg.id]:
                    if doc not in gone and doc not in newer:
                        updates[doc] = f"{seg.id}:{write_seq}"
            for doc in docmap:
                updates.setdefault(doc, f"{DELETED}:{write_seq}")
            log.info("index.rollback", collection=ref.name, target=version, documents=sum(s.live for s in kept))
            return self._publish(ref, base, kept, None, updates, job_id, floor=write_seq)

    def _rollback_target(self, ref: CollectionRef, version: str) -> Manifest:
        try:
            target = manifests.read(self.store, ref, version)
        except ObjectNotFound as exc:
            raise PermanentError(f"version {version} of {ref.name!r} does not exist (or was removed)") from exc
        if (target.tenant, target.collection, target.collection_id) != (ref.tenant, ref.name, ref.id):
            raise PermanentError(f"version {version} belongs to another collection")
        return target

    def _ids(self, ref: CollectionRef, seg: SegmentRef, version: str) -> list[str]:
        try:
            return segments.read_ids(self.store, ref, seg)
        except ObjectNotFound as exc:
            raise PermanentError(f"segment {seg.id} of version {version} was removed") from exc

    def _rolled_back_segments(
        self,
        ref: CollectionRef,
        target: Manifest,
        rows: dict[str, list[str]],
        base: Manifest | None,
        newer: dict[str, tuple[str, int]],
    ) -> tuple[SegmentRef, ...]:
        """The target's segments, minus documents that newer writes replaced, plus the rows those wrote."""
        holders: dict[str, set[str]] = {}
        for doc, entry in newer.items():
            if entry[0] != DELETED:
                holders.setdefault(entry[0], set()).add(doc)
        out: list[SegmentRef] = []
        for seg in target.segments:
            own = holders.pop(seg.id, set())
            shadowed = {d for d in rows[seg.id] if d in newer and d not in own}
            deleted = (set(seg.deleted) | shadowed) - own
            out.append(seg.model_copy(update={"deleted": tuple(sorted(deleted))}))
        by_id = {seg.id: seg for seg in base.segments} if base else {}
        for seg_id, docs in sorted(holders.items()):
            holder = by_id.get(seg_id)
            if holder is None:
                continue
            others = [d for d in segments.read_ids(self.store, ref, holder) if d not in docs]
            out.append(holder.model_copy(update={"deleted": tuple(sorted(others))}))
        return tuple(seg for seg in out if seg.live > 0)

    def _moves(self, ref: CollectionRef) -> dict[str, str]:
        """Segment id -> the segment compaction merged it into (a few entries per merge ever made)."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.segment_moves(ref.tenant, ref.name))  # type: ignore[assignment]
        return {keys.text(k): keys.text(v) for k, v in raw.items()}

    def _docmap(self, ref: CollectionRef) -> dict[str, tuple[str, int]]:
        """The whole document map, read in chunks (HSCAN) so no command walks the collection."""
        moves = self._moves(ref)
        out: dict[str, tuple[str, int]] = {}
        for doc, raw in self.client.hscan_iter(keys.docmap(ref.tenant, ref.name), count=DOCMAP_CHUNK):
            if (entry := _parse_entry(raw)) is not None:
                out[keys.text(doc)] = _resolve(entry, moves)
        return out

    def entries(self, ref: CollectionRef, ids: list[str]) -> dict[str, tuple[str, int] | None]:
        """The document map's ``(segment, write_seq)`` of each id (None: never written).

        The segment is the one holding the document now (merges followed). Read ``DOCMAP_CHUNK`` ids
        per command, so a merge of a million documents never blocks Redis for long.
        """
        if not ids:
            return {}
        key = keys.docmap(ref.tenant, ref.name)
        raw: list[bytes | None] = []
        for at in range(0, len(ids), DOCMAP_CHUNK):
            raw.extend(self.client.hmget(key, ids[at : at + DOCMAP_CHUNK]))  # type: ignore[arg-type]
        parsed = {i: _parse_entry(r) for i, r in zip(ids, raw, strict=True)}
        moves = self._moves(ref) if any(e is not None and e[0] != DELETED for e in parsed.values()) else {}
        return {i: None if e is None else _resolve(e, moves) for i, e in parsed.items()}

    def _manifest(self, ref: CollectionRef, base: Manifest | None, segs: tuple[SegmentRef, ...]) -> Manifest:
        return Manifest(
            tenant=ref.tenant,
            collection=ref.name,
            collection_id=ref.id,
            sequence=(base.sequence + 1) if base else 1,
            parent=base.version if base else None,
            created_at=now(),
            segments=segs,
        ).sealed()

    def _publish(
        self,
        ref: CollectionRef,
        base: Manifest | None,
        kept: tuple[SegmentRef, ...],
        added: SegmentRef | None,
        updates: dict[str, str],
        job_id: str,
        *,
        floor: int | None = None,
    ) -> Outcome:
        manifest = self._manifest(ref, base, (*kept, added) if added else kept)
        manifests.write(self.store, ref, manifest)
        job_key = keys.job(job_id) if job_id else keys.job("-")
        latest, docmap = keys.latest(ref.tenant, ref.name), keys.docmap(ref.tenant, ref.name)
        expected = base.version if base else ""
        if floor is None:
            args: list[Any] = [expected, manifest.version]
            for doc_id, value in updates.items():
                args += [doc_id, value]
            moved = _ADVANCE.run(self.client, [latest, docmap, job_key], args)
        else:
            staged = self._stage_docmap(ref, updates)
            floor_key = keys.write_floor(ref.tenant, ref.name)
            moves = keys.segment_moves(ref.tenant, ref.name)
            moved = _REPLACE.run(
                self.client, [latest, docmap, job_key, floor_key, staged, moves], [expected, manifest.version, floor]
            )
            if moved != 1:
                self.client.unlink(staged)
        if moved == -1:
            # The manifest and segment files stay unreferenced; cleanup removes them.
            raise Cancelled(f"job {job_id} was cancelled; {manifest.version} not published")
        return self._went_live(ref, manifest, moved)

    def _went_live(self, ref: CollectionRef, manifest: Manifest, moved: int) -> Outcome:
        """The outcome of a compare-and-set that should have made ``manifest`` live (``moved``: its reply).

        Raises:
            StaleIndex: LATEST moved meanwhile.
        """
        if moved != 1:
            raise StaleIndex(f"{ref.name}: LATEST moved while publishing {manifest.version}")
        log.info("index.published", collection=ref.name, version=manifest.version, documents=manifest.documents)
        if self.published is not None:
            self.published.inc()
        return Outcome(manifest.version, True, manifest)

    def _stage_docmap(self, ref: CollectionRef, entries: dict[str, str]) -> str:
        """Write a whole new document map beside the live one, ``DOCMAP_CHUNK`` entries per command."""
        staged = keys.docmap_next(ref.tenant, ref.name)
        self.client.unlink(staged)
        items = list(entries.items())
        for at in range(0, len(items), DOCMAP_CHUNK):
            self.client.hset(staged, mapping=dict(items[at : at + DOCMAP_CHUNK]))
        return staged

    def replace_segments(
        self, ref: CollectionRef, base: Manifest, kept: tuple[SegmentRef, ...], merged_into: str, merged: list[str]
    ) -> Outcome:
        """Publish ``kept`` as the version after ``base``, where segment ``merged_into`` replaces ``merged``.

        For compaction; the caller holds :meth:`locked` and has read ``base`` under it. The document map
        is left as it is: the segment moves recorded here lead its entries to the merged segment.
        """
        manifest = self._manifest(ref, base, kept)
        manifests.write(self.store, ref, manifest)
        moved = _COMPACT.run(
            self.client,
            [keys.latest(ref.tenant, ref.name), keys.segment_moves(ref.tenant, ref.name)],
            [base.version, manifest.version, merged_into, *merged],
        )
        return self._went_live(ref, manifest, moved)

    def locked(self, ref: CollectionRef) -> Any:
        """The per-collection lock every change of LATEST and the document map is made under."""
        return self.client.lock(
            keys.collection_lock(ref.tenant, ref.name),
            timeout=self.lock_ttl_s,
            blocking_timeout=self.lock_ttl_s,
        )

    def drop(self, collection: Collection) -> int:
        """Delete every object of a collection incarnation (after the catalogue forgot it)."""
        if (live := catalog.get(self.client, collection.tenant, collection.name)) and live.id == collection.id:
            return 0  # still live: refuse, this message must be stale
        removed = 0
        for key in list(self.store.list(collection.ref.prefix)):
            self.store.delete(key)
            removed += 1
        log.info("collection.dropped", collection=collection.name, objects=removed)
        return removed


def _resolve(entry: tuple[str, int], moves: dict[str, str]) -> tuple[str, int]:
    """``entry`` with its segment followed through ``moves`` to the segment holding the document now."""
    segment, seq = entry
    for _ in range(len(moves)):  # a chain is at most as long as the moves (no cycle can make it loop)
        if (into := moves.get(segment)) is None:
            break
        segment = into
    return segment, seq


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
