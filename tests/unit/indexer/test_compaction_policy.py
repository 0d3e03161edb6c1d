"""Which segments compaction picks, and what it turns them into."""

from __future__ import annotations

from datetime import UTC, datetime

from services.indexer.compaction import Policy, choose
from shared.index.manifests import Manifest, SegmentKind, SegmentRef
from shared.index.segments import HnswParams

POLICY = Policy(small_vectors=1_000, deleted_ratio=0.2, approximate_threshold=10_000, hnsw=HnswParams(16, 40, 32))


def _seg(seg_id: str, vectors: int, deleted: int = 0, kind: SegmentKind = "flat") -> SegmentRef:
    return SegmentRef(id=seg_id, kind=kind, vectors=vectors, files={}, deleted=tuple(f"x{i}" for i in range(deleted)))


def _manifest(*segs: SegmentRef) -> Manifest:
    return Manifest(tenant="t", collection="c", collection_id="i", sequence=1, parent=None,
                    created_at=datetime.now(UTC), segments=segs)  # fmt: skip


def test_small_flat_segments_and_tombstone_heavy_ones_are_merged_into_a_flat_one() -> None:
    choice = choose(_manifest(_seg("a", 500), _seg("b", 900), _seg("big", 5_000), _seg("holey", 3_000, 700)), POLICY)
    assert choice is not None and choice.kind == "flat"
    assert [s.id for s in choice.segments] == ["a", "b", "holey"]


def test_flat_segments_reaching_the_threshold_together_become_one_hnsw_segment() -> None:
    segs = [_seg(f"s{i}", 3_000) for i in range(4)]
    choice = choose(_manifest(_seg("graph", 20_000, kind="hnsw"), *segs), POLICY)
    assert choice is not None and choice.kind == "hnsw"
    assert [s.id for s in choice.segments] == ["s0", "s1", "s2", "s3"]  # the existing graph is left alone


def test_a_lone_clean_segment_is_left_alone_unless_a_rebuild_is_asked() -> None:
    assert choose(_manifest(_seg("a", 500)), POLICY) is None
    assert choose(_manifest(_seg("g", 20_000, kind="hnsw"), _seg("big", 5_000)), POLICY) is None
    rebuild = choose(_manifest(_seg("g", 20_000, kind="hnsw"), _seg("big", 5_000)), POLICY, full=True)
    assert rebuild is not None and rebuild.kind == "hnsw" and len(rebuild.segments) == 2


def test_a_lone_segment_with_tombstones_is_rewritten() -> None:
    choice = choose(_manifest(_seg("a", 500, deleted=10)), POLICY)
    assert choice is not None and [s.id for s in choice.segments] == ["a"]
