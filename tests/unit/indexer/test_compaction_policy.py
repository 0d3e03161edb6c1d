"""Which segments compaction picks, and what it turns them into: the size-tier rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from services.indexer.compaction import Policy, choose, tier_full
from shared.index.approximate import HnswParams, RecallTarget
from shared.index.manifests import Manifest, SegmentKind, SegmentRef

POLICY = Policy(
    tier_base=1_000,
    merge_factor=10,
    max_segment=2_000_000,
    deleted_ratio=0.2,
    max_tombstones=10_000,
    approximate_threshold=50_000,
    approximate_kind="hnsw",
    hnsw=HnswParams(16, 40, 32),
    target=RecallTarget(),
)


def _seg(seg_id: str, vectors: int, deleted: int = 0, kind: SegmentKind = "flat") -> SegmentRef:
    return SegmentRef(id=seg_id, kind=kind, vectors=vectors, files={}, deleted=tuple(f"x{i}" for i in range(deleted)))


def _manifest(*segs: SegmentRef) -> Manifest:
    return Manifest(tenant="t", collection="c", collection_id="i", sequence=1, parent=None,
                    created_at=datetime.now(UTC), segments=segs)  # fmt: skip


def test_tiers_grow_by_the_merge_factor_from_the_base() -> None:
    assert [POLICY.tier(v) for v in (1, 999, 1_000, 9_999)] == [0, 0, 0, 0]
    assert [POLICY.tier(v) for v in (10_000, 99_999, 100_000, 999_999, 1_000_000)] == [1, 1, 2, 2, 3]


def test_a_tier_holding_merge_factor_segments_is_merged_into_the_next() -> None:
    segs = [_seg(f"b{i}", 1_000) for i in range(10)]
    choice = choose(_manifest(_seg("big", 20_000), *segs), POLICY)
    assert choice is not None and choice.kind == "flat"
    assert sorted(s.id for s in choice.segments) == [f"b{i}" for i in range(10)]  # tier 1 is left alone
    assert tier_full(_manifest(*segs), POLICY) and not tier_full(_manifest(*segs[:9]), POLICY)
    assert POLICY.tier(sum(s.live for s in choice.segments)) == 1


def test_fewer_than_merge_factor_segments_per_tier_is_left_alone() -> None:
    segs = [_seg(f"b{i}", 800) for i in range(9)] + [_seg(f"m{i}", 30_000) for i in range(9)]
    assert choose(_manifest(*segs), POLICY) is None


def test_a_merge_reaching_the_threshold_is_approximate() -> None:
    segs = [_seg(f"m{i}", 6_000) for i in range(10)]
    choice = choose(_manifest(*segs), POLICY)
    assert choice is not None and choice.kind == "hnsw" and len(choice.segments) == 10


def test_the_lowest_full_tier_goes_first_and_only_merge_factor_of_its_smallest() -> None:
    small = [_seg(f"b{i:02d}", 100 + i) for i in range(12)]
    mid = [_seg(f"m{i}", 20_000) for i in range(10)]
    choice = choose(_manifest(*mid, *small), POLICY)
    assert choice is not None and [s.id for s in choice.segments] == [f"b{i:02d}" for i in range(10)]


def test_segments_at_the_maximum_size_are_never_merged() -> None:
    policy = Policy(**{**POLICY.__dict__, "max_segment": 500_000})
    giants = [_seg(f"g{i}", 600_000, kind="hnsw") for i in range(12)]
    assert choose(_manifest(*giants), policy) is None


def test_a_lone_segment_with_tombstones_is_rewritten_and_a_rebuild_takes_everything() -> None:
    holey = _manifest(_seg("a", 500, deleted=10), _seg("b", 500, deleted=200))
    choice = choose(holey, POLICY)
    assert choice is not None and [s.id for s in choice.segments] == ["b"]
    assert not tier_full(holey, POLICY)  # a publish queues merges of full tiers only
    assert choose(_manifest(_seg("a", 500)), POLICY) is None
    rebuild = choose(_manifest(_seg("g", 60_000, kind="hnsw"), _seg("big", 5_000)), POLICY, full=True)
    assert rebuild is not None and rebuild.kind == "hnsw" and len(rebuild.segments) == 2


def test_a_manifest_with_too_many_tombstones_queues_the_rewrite_of_its_most_holey_segment() -> None:
    # 12,000 tombstones, none of the segments 20 % deleted: the tier rule alone would leave them all.
    segs = [_seg(f"g{i}", 100_000, deleted=4_000 + i, kind="ivf") for i in range(3)]
    holey = _manifest(*segs)
    assert tier_full(holey, POLICY)
    choice = choose(holey, POLICY)
    assert choice is not None and [s.id for s in choice.segments] == ["g2"]
    assert not tier_full(_manifest(*segs[:2]), POLICY) and choose(_manifest(*segs[:2]), POLICY) is None


def _simulate(batches: int, size: int, policy: Policy) -> tuple[list[int], int]:
    """Segment counts after each publish, merging (as the queued compaction does) until the rule is met."""
    segs: list[SegmentRef] = []
    counts = []
    rewritten = 0
    for b in range(batches):
        segs.append(_seg(f"b{b:05d}", size))
        while (choice := choose(_manifest(*segs), policy)) is not None:
            picked = {s.id for s in choice.segments}
            merged = sum(s.live for s in choice.segments)
            rewritten += merged
            segs = [s for s in segs if s.id not in picked] + [_seg(f"c{b:05d}-{len(segs)}", merged, kind=choice.kind)]
        counts.append(len(segs))
    return counts, rewritten


def test_segment_counts_stay_logarithmic_as_batches_arrive() -> None:
    # Given 5,000 batches of 200 vectors (a million vectors) published one by one,
    counts, rewritten = _simulate(5_000, 200, POLICY)
    # then after every publish the segments number at most (factor - 1) per tier, plus the one just added,
    for n, count in enumerate(counts, start=1):
        tiers = POLICY.tier(n * 200) + 1
        assert count <= (POLICY.merge_factor - 1) * tiers + 1, (n, count)
    assert max(counts) <= 4 * 9 + 1 and counts[-1] < 40
    # and every vector was rewritten about once per tier it climbed, never once per publish.
    total = 5_000 * 200
    assert rewritten <= total * (math.log(total / 200, POLICY.merge_factor) + 1)
