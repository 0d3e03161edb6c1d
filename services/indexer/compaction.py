"""Compaction: merge a collection's small segments into one, drop tombstoned rows, go approximate when large.

The merged segment is built without the collection lock (it can take a minute for an HNSW graph),
then published through the normal path under the lock: a new manifest whose parent is the version
live at that moment, LATEST and the document map moved by the same compare-and-set as a write.
Writes that landed meanwhile are kept: a document whose document-map entry changed since the merge
began (replaced, deleted, rolled back) is tombstoned in the merged segment, so its newer version
stays the live one; every other merged document's entry moves to the merged segment, so later
deletes and replacements tombstone the right segment.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared import clock
from shared.errors import StaleIndex
from shared.index import segments
from shared.index.segments import HnswParams

if TYPE_CHECKING:
    from services.indexer.publishing import Publisher
    from shared.config import Settings
    from shared.index.manifests import Manifest, SegmentKind, SegmentRef
    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Policy:
    """When to compact and what to build."""

    small_vectors: int  # flat segments below this are merged
    deleted_ratio: float  # a segment with this share of tombstones is rewritten
    approximate_threshold: int  # a merged segment of this many vectors or more is HNSW
    hnsw: HnswParams

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy the settings describe."""
        return cls(
            small_vectors=settings.compaction_small_segment_vectors,
            deleted_ratio=settings.compaction_deleted_ratio,
            approximate_threshold=settings.approximate_threshold,
            hnsw=HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search),
        )


@dataclass(frozen=True)
class Choice:
    """Segments to merge, and the kind of segment they become."""

    segments: tuple[SegmentRef, ...]
    kind: SegmentKind


def choose(manifest: Manifest, policy: Policy, *, full: bool = False) -> Choice | None:
    """What to compact in ``manifest`` (None: nothing worth it).

    - ``full``: every segment, into one (a rebuild);
    - otherwise small flat segments and segments heavy with tombstones; once the flat segments hold
      ``approximate_threshold`` live vectors together, all of them, into one HNSW segment.
    """
    segs = manifest.segments
    dirty = [s for s in segs if s.vectors and len(s.deleted) / s.vectors >= policy.deleted_ratio]
    flats = [s for s in segs if s.kind == "flat"]
    if full:
        picked = list(segs)
    elif sum(s.live for s in flats) >= policy.approximate_threshold:
        picked = flats + [s for s in dirty if s.kind != "flat"]
    else:
        picked = [s for s in segs if (s.kind == "flat" and s.vectors < policy.small_vectors) or s in dirty]
    if not picked:
        return None
    live = sum(s.live for s in picked)
    kind: SegmentKind = "hnsw" if live >= policy.approximate_threshold else "flat"
    if len(picked) == 1 and not picked[0].deleted and picked[0].kind == kind:
        return None  # already what compaction would build
    return Choice(tuple(picked), kind)


@dataclass(frozen=True)
class Result:
    """What one compaction of one collection did."""

    collection: str
    version: str
    merged: int  # segments merged
    segment: str  # the segment they became
    kind: SegmentKind
    vectors: int  # rows of the new segment
    dropped: int  # tombstoned rows left behind
    documents: int  # live documents of the new version
    segments: int  # segments of the new version
    seconds: float


def new_segment_id() -> str:
    """A compacted segment's id: time-ordered like batch ids, ``c``-prefixed to tell them apart."""
    return f"c{clock.now_ms():013d}-{uuid.uuid4().hex[:8]}"


class Compactor:
    """Compacts collections through the publisher's lock and compare-and-set."""

    def __init__(self, store: ObjectStore, publisher: Publisher, policy: Policy) -> None:
        self.store = store
        self.publisher = publisher
        self.policy = policy

    def compact(self, collection: Collection, *, full: bool = False) -> Result | None:
        """Compact one collection if its live version calls for it; returns what was published.

        Raises:
            StaleIndex: a rollback moved documents into the segments being merged meanwhile; try again.
        """
        started = time.perf_counter()
        ref = collection.ref
        base = self.publisher.current(ref)
        choice = choose(base, self.policy, full=full) if base is not None else None
        if base is None or choice is None:
            return None
        ids, vectors, metadata, before = self._live_rows(collection, choice)
        if not ids:
            return None
        seg_id = new_segment_id()
        segment, files = segments.build(seg_id, vectors, ids, metadata, kind=choice.kind, hnsw=self.policy.hnsw)
        segments.upload(self.store, ref, segment, files)
        merged = {s.id for s in choice.segments}
        with self.publisher.locked(ref):
            current = self.publisher.current(ref)
            if current is None:
                return None
            after = self.publisher.entries(ref, ids)
            moved = {d for d in ids if after[d] != before[d]}
            if any((entry := after[d]) is not None and entry[0] in merged for d in moved):
                raise StaleIndex(f"{ref.name}: a rollback changed the segments being compacted")
            segment = segment.model_copy(update={"deleted": tuple(sorted(moved))})
            kept = tuple(s for s in current.segments if s.id not in merged)
            if segment.live:
                kept = (segment, *kept)
            updates = {d: f"{seg_id}:{entry[1]}" for d in ids if d not in moved and (entry := before[d]) is not None}
            outcome = self.publisher.replace_segments(ref, current, kept, updates)
        assert outcome.version is not None and outcome.manifest is not None
        result = Result(
            collection=ref.name,
            version=outcome.version,
            merged=len(choice.segments),
            segment=seg_id,
            kind=choice.kind,
            vectors=len(ids),
            dropped=sum(s.vectors for s in choice.segments) - len(ids),
            documents=outcome.manifest.documents,
            segments=len(outcome.manifest.segments),
            seconds=round(time.perf_counter() - started, 3),
        )
        log.info("index.compacted", tenant=ref.tenant, **result.__dict__)
        return result

    def _live_rows(
        self, collection: Collection, choice: Choice
    ) -> tuple[list[str], np.ndarray[Any, Any], list[dict[str, Any]], dict[str, tuple[str, int] | None]]:
        """The merged segments' live rows whose document map entry points at them, and those entries."""
        ref = collection.ref
        ids: list[str] = []
        parts: list[np.ndarray[Any, Any]] = []
        metadata: list[dict[str, Any]] = []
        sources: list[str] = []
        for seg in choice.segments:
            loaded = segments.load(self.store, ref, seg)
            gone = set(seg.deleted)
            rows = [r for r, doc in enumerate(loaded.ids) if doc not in gone]
            parts.append(np.asarray(loaded.vectors[rows], dtype=np.float32))
            ids += [loaded.ids[r] for r in rows]
            metadata += [loaded.metadata[r] for r in rows]
            sources += [seg.id] * len(rows)
        entries = self.publisher.entries(ref, ids)
        keep = [i for i, doc in enumerate(ids) if (e := entries[doc]) is not None and e[0] == sources[i]]
        vectors = np.concatenate(parts)[keep] if parts else np.zeros((0, 0), dtype=np.float32)
        kept_ids = [ids[i] for i in keep]
        return kept_ids, vectors, [metadata[i] for i in keep], {d: entries[d] for d in kept_ids}
