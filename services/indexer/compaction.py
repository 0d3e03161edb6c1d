"""Compaction: merge a collection's segments by size tiers as they arrive, drop tombstoned rows.

Segments fall into tiers by live vectors: tier ``t`` holds segments of ``base * factor**t`` up to
``base * factor**(t+1)`` vectors (everything below ``base`` is tier 0). When a tier holds
``merge_factor`` segments they are merged into one, which lands in the next tier, so a collection of
``n`` vectors keeps fewer than ``merge_factor`` segments per tier: O(log n) segments, and every
vector is rewritten O(log n) times. A merge reads and builds only its own segments, memory-mapped from
local copies and read chunk by chunk into the new index, which is written to a file and uploaded from
it: its memory is the new index, the merged rows' ids and metadata and a fixed working set. Segments
of ``max_segment`` vectors or more are not merged further. A merged segment of ``approximate_threshold``
vectors or more is approximate (HNSW or IVF), checked for recall at build (:mod:`shared.index.approximate`).
A merge keeps the collection's quantisation: an int8 collection's merged segment is int8 again (its rows
read back decoded), checked the same way.

The merged segment is built without the collection lock, then published through the normal path
under the lock: a new manifest whose parent is the version live at that moment, LATEST and the
document map moved by the same compare-and-set as a write. Writes that landed meanwhile are kept: a
document whose document-map entry changed since the merge began (replaced, deleted, rolled back) is
tombstoned in the merged segment, so its newer version stays the live one. The document map itself is
not rewritten (a million entries would hold Redis for seconds): the publish records which segments the
merged one replaces, and readers of the map follow those moves, so later deletes and replacements
tombstone the right segment. No Redis command of a merge touches more than a few thousand documents.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from shared import clock
from shared.errors import StaleIndex
from shared.index import doctable, segments
from shared.index.approximate import ApproximateKind, HnswParams, RecallTarget
from shared.index.columns import ColumnBuilder, Rows
from shared.index.segcache import SegmentCache
from shared.index.sources import Source, Stacked, mapped_regions

if TYPE_CHECKING:
    from services.indexer.publishing import Publisher
    from shared.config import Settings
    from shared.index.layout import CollectionRef
    from shared.index.manifests import Manifest, SegmentKind, SegmentRef
    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)

# Ids whose document map entries a merge reads at once, from each source and again before publishing (5,000 per
# Redis command): a chunk of ids is a few MB, not the collection.
ENTRY_CHUNK: Final = 50_000


@dataclass(frozen=True)
class Policy:
    """When to merge and what to build."""

    tier_base: int  # segments below this many live vectors are tier 0
    merge_factor: int  # a tier holding this many segments is merged into one (and tiers grow by it)
    max_segment: int  # segments of this many live vectors or more are not merged (only rewritten)
    deleted_ratio: float  # a segment with this share of tombstones is rewritten
    max_tombstones: int  # a manifest listing more tombstones than this has its most holey segment rewritten
    approximate_threshold: int  # a merged segment of this many vectors or more is approximate
    approximate_kind: ApproximateKind
    hnsw: HnswParams
    target: RecallTarget

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy the settings describe."""
        return cls(
            tier_base=settings.compaction_tier_base_vectors,
            merge_factor=settings.compaction_merge_factor,
            max_segment=settings.compaction_max_segment_vectors,
            deleted_ratio=settings.compaction_deleted_ratio,
            max_tombstones=settings.compaction_max_tombstones,
            approximate_threshold=settings.approximate_threshold,
            approximate_kind=settings.approximate_kind,
            hnsw=HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search),
            target=RecallTarget(min_recall=settings.min_recall),
        )

    def tier(self, vectors: int) -> int:
        """The tier of a segment of ``vectors`` live vectors."""
        if vectors < self.tier_base * self.merge_factor:
            return 0
        tier = int(math.log(vectors / self.tier_base, self.merge_factor))
        # Float logs of exact powers can land just below the integer: settle it with integer arithmetic.
        while self.tier_base * self.merge_factor ** (tier + 1) <= vectors:
            tier += 1
        while tier and self.tier_base * self.merge_factor**tier > vectors:
            tier -= 1
        return tier

    def kind_for(self, vectors: int) -> SegmentKind:
        """What a merged segment of ``vectors`` live vectors is built as."""
        return self.approximate_kind if vectors >= self.approximate_threshold else "flat"


@dataclass(frozen=True)
class Choice:
    """Segments to merge, and the kind of segment they become."""

    segments: tuple[SegmentRef, ...]
    kind: SegmentKind


def _full_tier(segs: tuple[SegmentRef, ...], policy: Policy) -> list[SegmentRef]:
    """The ``merge_factor`` smallest segments of the lowest tier holding that many (none: empty)."""
    tiers: dict[int, list[SegmentRef]] = {}
    for seg in segs:
        if seg.live < policy.max_segment:
            tiers.setdefault(policy.tier(seg.live), []).append(seg)
    for tier in sorted(tiers):
        members = tiers[tier]
        if len(members) >= policy.merge_factor:
            return sorted(members, key=lambda s: (s.live, s.id))[: policy.merge_factor]
    return []


def _tombstones(manifest: Manifest) -> int:
    return sum(len(s.deleted) for s in manifest.segments)


def tier_full(manifest: Manifest, policy: Policy) -> bool:
    """Whether a publish of ``manifest`` should queue its compaction right away.

    When a tier holds ``merge_factor`` segments, or when the manifest lists more than ``max_tombstones``
    deleted documents (every manifest repeats them, so they would make each version as large as the
    deletes made since the last rewrite). Tombstone-heavy segments below that are rewritten by the
    compaction schedule (or along with a merge), not after every delete.
    """
    return bool(_full_tier(manifest.segments, policy)) or _tombstones(manifest) > policy.max_tombstones


def choose(manifest: Manifest, policy: Policy, *, full: bool = False) -> Choice | None:
    """What to compact in ``manifest`` (None: nothing worth it).

    - ``full``: every segment, into one (a rebuild);
    - otherwise the lowest tier holding ``merge_factor`` segments (its smallest ones); else, when the
      manifest lists more than ``max_tombstones`` deleted documents, the segment with the most; else
      the smallest segment heavy with tombstones, rewritten alone.
    """
    segs = manifest.segments
    if full:
        picked = list(segs)
    else:
        picked = _full_tier(segs, policy)
        if not picked and _tombstones(manifest) > policy.max_tombstones:
            picked = [max(segs, key=lambda s: (len(s.deleted), s.id))]
        if not picked:
            dirty = [s for s in segs if s.vectors and len(s.deleted) / s.vectors >= policy.deleted_ratio]
            picked = sorted(dirty, key=lambda s: (s.live, s.id))[:1]
    if not picked:
        return None
    kind = policy.kind_for(sum(s.live for s in picked))
    if len(picked) == 1 and not picked[0].deleted and picked[0].kind == kind:
        return None  # already what compaction would build
    return Choice(tuple(picked), kind)


@dataclass(frozen=True)
class Result:
    """What one compaction of one collection did."""

    tenant: str
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
    search_param: int | None = None  # approximate segments: the efSearch / nprobe chosen at build
    recall: float | None = None  # approximate or int8 segments: recall@10 measured at build
    quantization: str | None = None  # "int8" when the merged segment holds int8 codes


def new_segment_id() -> str:
    """A compacted segment's id: time-ordered like batch ids, ``c``-prefixed to tell them apart."""
    return f"c{clock.now_ms():013d}-{uuid.uuid4().hex[:8]}"


class Compactor:
    """Compacts collections through the publisher's lock and compare-and-set."""

    def __init__(self, store: ObjectStore, publisher: Publisher, policy: Policy, work_dir: Path | None = None) -> None:
        self.store = store
        self.publisher = publisher
        self.policy = policy
        self.work_dir = work_dir  # where a merge keeps its sources' and its segment's files (None: the temp dir)

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
        with tempfile.TemporaryDirectory(prefix="semaflow-merge-", dir=self.work_dir) as work:
            folder = Path(work)
            cache = SegmentCache(self.store, folder / "sources")
            rows, vectors, before = self._live_rows(collection, choice, cache)
            if not len(rows):
                return None
            seg_id = new_segment_id()
            segment, files = segments.write(
                folder,
                seg_id,
                vectors,
                rows,
                kind=choice.kind,
                hnsw=self.policy.hnsw,
                target=self.policy.target,
                quantization=collection.quantization,
            )
            del vectors  # the sources' mappings are closed before publishing
            segments.upload_files(self.store, ref, segment, files)
        merged = {s.id for s in choice.segments}
        with self.publisher.locked(ref):
            current = self.publisher.current(ref)
            if current is None:
                return None
            moved = before.moved(self.publisher, ref, rows)
            if any((entry := after) is not None and entry[0] in merged for after in moved.values()):
                raise StaleIndex(f"{ref.name}: a rollback changed the segments being compacted")
            segment = segment.model_copy(update={"deleted": tuple(sorted(moved))})
            kept = tuple(s for s in current.segments if s.id not in merged)
            if segment.live:
                kept = (segment, *kept)
            outcome = self.publisher.replace_segments(ref, current, kept, seg_id, sorted(merged))
        assert outcome.version is not None and outcome.manifest is not None
        result = Result(
            tenant=ref.tenant,
            collection=ref.name,
            version=outcome.version,
            merged=len(choice.segments),
            segment=seg_id,
            kind=segment.kind,
            vectors=len(rows),
            dropped=sum(s.vectors for s in choice.segments) - len(rows),
            documents=outcome.manifest.documents,
            segments=len(outcome.manifest.segments),
            seconds=round(time.perf_counter() - started, 3),
            search_param=segment.search_param,
            recall=segment.recall,
            quantization=segment.quantization,
        )
        log.info("index.compacted", **result.__dict__)
        return result

    def _live_rows(self, collection: Collection, choice: Choice, cache: SegmentCache) -> tuple[Rows, Stacked, Before]:
        """The merged segments' live rows (ids, metadata and texts as columns, and vectors) whose document map
        entry points at them, and those entries.

        Nothing is parsed or held as a Python object a row: each source's ids and metadata are copied as bytes
        from its memory-mapped document table, and its texts as entries of its texts file. The vectors are not
        copied here: each source is opened memory-mapped from ``cache`` and its kept rows are read chunk by
        chunk while the new index is built (:class:`shared.index.sources.Stacked`), so the vectors are in
        memory once (the new index), however many segments it reads. A segment written before texts were kept
        gives its rows no text, which the merged segment keeps.
        """
        ref = collection.ref
        ids, metadata, texts = ColumnBuilder(), ColumnBuilder(), ColumnBuilder()
        sources: list[Source] = []
        before = Before()
        dim = 0
        for seg in choice.segments:
            opened = segments.open_cached(cache, ref, seg)
            dim = opened.vectors.shape[1]
            assert isinstance(opened.ids, doctable.IdColumn)  # a mapped segment reads its document table
            table = opened.ids.table
            own_ids = table.id_column()
            gone = set(seg.deleted)
            kept, seqs = array("q"), array("q")  # 8 bytes a row, not a Python int
            for at in range(0, len(own_ids), ENTRY_CHUNK):
                part = [table.id(r) for r in range(at, min(at + ENTRY_CHUNK, len(own_ids)))]
                found = self.publisher.entries(ref, [doc for doc in part if doc not in gone])
                for k, doc in enumerate(part):
                    if doc not in gone and (entry := found[doc]) is not None and entry[0] == seg.id:
                        kept.append(at + k)
                        seqs.append(entry[1])
            rows = np.frombuffer(kept, dtype=np.int64)
            originals = segments.open_originals(cache, ref, seg, dim)
            if originals is not None:  # an int8 segment: its rows as sent, not decoded from their codes
                sources.append(Source.rows_of(originals[0], rows, mapped_regions(originals[1])))
            else:
                sources.append(Source.of(opened, rows, mapped_regions(cache.path(ref, seg, segments.INDEX_FILE))))
            ids.take(own_ids, rows)
            metadata.take(table.metadata_column(), rows)
            texts.take(segments.read_text_entries(self.store, ref, seg), rows)
            before.add(seg.id, np.frombuffer(seqs, dtype=np.int64))
            del opened, table, own_ids
        return Rows(ids.build(), metadata.build(), texts.build()), Stacked(sources, dim), before


class Before:
    """The document map's entries of a merge's rows when they were read: each source segment's id and its kept
    rows' write sequences, in the rows' order (two integers' worth a row, where a dict of entries held 150
    bytes: a million rows' entries would hold 150 MB through the whole merge)."""

    def __init__(self) -> None:
        self.segments: list[tuple[str, np.ndarray[Any, np.dtype[np.int64]]]] = []

    def add(self, segment_id: str, seqs: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        self.segments.append((segment_id, seqs))

    def moved(self, publisher: Publisher, ref: CollectionRef, rows: Rows) -> dict[str, tuple[str, int] | None]:
        """The rows (of ``rows``, in the order they were read) whose entry changed since: written again, deleted
        or moved by a rollback, with their entry now. Reads the document map a chunk of ids at a time."""
        if not self.segments:
            return {}
        seqs = np.concatenate([s for _, s in self.segments])
        ends = np.cumsum([len(s) for _, s in self.segments])
        out: dict[str, tuple[str, int] | None] = {}
        for at in range(0, len(rows), ENTRY_CHUNK):
            part = rows.id_list(at, at + ENTRY_CHUNK)
            owners = np.searchsorted(ends, np.arange(at, at + len(part)), side="right")
            now = publisher.entries(ref, part)
            for k, doc in enumerate(part):
                entry = now[doc]
                if entry is None or entry[0] != self.segments[owners[k]][0] or entry[1] != seqs[at + k]:
                    out[doc] = entry
        return out
