from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.gateway.search.engine import search_pool, search_snapshot
from services.gateway.search.snapshots import Snapshot
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.manifests import SegmentKind
from shared.index.segments import LoadedSegment
from shared.index.storage import LocalStore


def _segment(seg_id: str, vectors: np.ndarray[Any, Any], ids: list[str], meta: list[dict[str, Any]]) -> LoadedSegment:
    return LoadedSegment(seg_id, vectors, ids, meta)


def _snapshot(deleted: tuple[str, ...] = ()) -> tuple[Snapshot, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    v = normalize(rng.normal(size=(20, 384)))
    s1 = _segment("s1", v[:10], [f"d{i}" for i in range(10)], [{"even": i % 2 == 0} for i in range(10)])
    s2 = _segment("s2", v[10:], [f"d{i}" for i in range(10, 20)], [{"even": i % 2 == 0} for i in range(10, 20)])
    return Snapshot.build(CollectionRef("t", "c", "x"), "v1", [(s1, deleted), (s2, deleted)]), v


def test_top_k_is_merged_across_segments_in_score_order() -> None:
    snapshot, v = _snapshot()
    q = v[15]
    hits = search_snapshot(snapshot, q, 5)
    exact = np.argsort(-(v @ q))[:5]
    assert [h.id for h in hits] == [f"d{i}" for i in exact]
    assert hits[0].id == "d15"
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_tombstoned_documents_never_return() -> None:
    snapshot, v = _snapshot(deleted=("d15", "d3"))
    hits = search_snapshot(snapshot, v[15], 20)
    ids = {h.id for h in hits}
    assert "d15" not in ids and "d3" not in ids
    assert len(hits) == 18


def test_filter_keeps_only_matching_metadata() -> None:
    snapshot, v = _snapshot(deleted=("d4",))
    hits = search_snapshot(snapshot, v[15], 20, {"even": True})
    assert {h.id for h in hits} == {f"d{i}" for i in range(0, 20, 2)} - {"d4"}


def test_k_larger_than_collection_returns_everything_live() -> None:
    snapshot, v = _snapshot()
    assert len(search_snapshot(snapshot, v[0], 100)) == 20


def test_merged_snapshot_holds_each_vector_once_and_exactly() -> None:
    snapshot, v = _snapshot(deleted=("d1",))
    assert snapshot.index is not None and snapshot.index.ntotal == 20
    assert snapshot.memory_bytes == 20 * 384 * 4
    np.testing.assert_array_equal(snapshot.segments[1].segment.vectors, v[10:])
    assert snapshot.documents == 19


def test_empty_snapshot_returns_nothing() -> None:
    empty = Snapshot.build(CollectionRef("t", "c", "x"), "v0", [])
    assert search_snapshot(empty, np.ones(384, dtype=np.float32), 5) == []


def test_merged_index_holds_every_segments_rows_in_order() -> None:
    snapshot, v = _snapshot()
    assert snapshot.index is not None
    assert snapshot.index.ntotal == 20
    np.testing.assert_array_equal(snapshot.index.reconstruct_n(0, 20), v.astype(np.float32))
    np.testing.assert_array_equal(snapshot.offsets, [0, 10])


def test_search_pool_threads_use_the_configured_faiss_threads() -> None:
    import faiss

    pool = search_pool(2, 1)
    try:
        assert pool.submit(faiss.omp_get_max_threads).result() == 1
    finally:
        pool.shutdown()


def _approximate_snapshot(
    root: Path, kind: SegmentKind = "hnsw", n: int = 3000, deleted: tuple[str, ...] = ()
) -> tuple[Snapshot, np.ndarray[Any, Any]]:
    """A snapshot of one approximate segment (built and loaded as compaction and a gateway do) plus a small flat one.

    The vectors are random, where a graph or IVF index reaches only modest recall: the minimum is set
    low so the segment stays approximate (a real minimum would have it built flat).
    """
    from shared.index import segments
    from shared.index.segments import HnswParams, RecallTarget, build

    rng = np.random.default_rng(11)
    v = normalize(rng.normal(size=(n + 10, 384)))
    ids = [f"h{i}" for i in range(n)]
    meta = [{"even": i % 2 == 0} for i in range(n)]
    target = RecallTarget(min_recall=0.3)
    ref, files = build("big", v[:n], ids, meta, kind=kind, hnsw=HnswParams(16, 64, 64), target=target)
    assert ref.kind == kind and ref.search_param is not None
    store, where = LocalStore(root), CollectionRef("t", "c", "x")
    segments.upload(store, where, ref, files)
    big = segments.load(store, where, ref)
    assert big.search_param == ref.search_param
    small = _segment("small", v[n:], [f"s{i}" for i in range(10)], [{"even": True}] * 10)
    return Snapshot.build(where, "v2", [(big, deleted), (small, ())]), v


KINDS = pytest.mark.parametrize("kind", ["hnsw", "ivf"])


@KINDS
def test_approximate_and_flat_segments_are_searched_and_merged(tmp_path: Path, kind: SegmentKind) -> None:
    snapshot, v = _approximate_snapshot(tmp_path, kind)
    assert [s.segment.id for s in snapshot.flat] == ["small"]
    assert [s.segment.id for s in snapshot.approximate] == ["big"]
    q = normalize((v[5] + v[3002]).reshape(1, -1))[0]
    hits = search_snapshot(snapshot, q, 2)
    assert {h.id for h in hits} == {"h5", "s2"}
    assert snapshot.documents == 3010
    assert snapshot.memory_bytes > 3000 * 384 * 4


@KINDS
def test_tombstoned_rows_of_an_approximate_segment_never_return_and_k_is_kept(
    tmp_path: Path, kind: SegmentKind
) -> None:
    deleted = tuple(f"h{i}" for i in range(0, 3000, 3))
    snapshot, v = _approximate_snapshot(tmp_path, kind, deleted=deleted)
    hits = search_snapshot(snapshot, v[3], 50)
    assert len(hits) == 50
    assert not {h.id for h in hits} & set(deleted)


@KINDS
def test_a_selective_filter_on_an_approximate_segment_still_returns_k_hits(tmp_path: Path, kind: SegmentKind) -> None:
    snapshot, v = _approximate_snapshot(tmp_path, kind)
    # Only 20 rows of 3,010 allowed: far too few for the graph walk to find them, so it scans exactly.
    for i in range(20):
        snapshot.approximate[0].segment.metadata[i * 100]["rare"] = True
    hits = search_snapshot(snapshot, v[7], 10, {"rare": True})
    assert len(hits) == 10 and all(h.metadata.get("rare") for h in hits)


@KINDS
def test_when_the_index_comes_back_short_the_segment_is_scanned_exactly(tmp_path: Path, kind: SegmentKind) -> None:
    snapshot, v = _approximate_snapshot(tmp_path, kind)
    # 5 % of the rows allowed, k=100: more than a 64-wide beam finds among excluded neighbours.
    for row, meta in enumerate(snapshot.approximate[0].segment.metadata):
        meta["sparse"] = row % 20 == 0
    hits = search_snapshot(snapshot, v[1], 100, {"sparse": True})
    assert len(hits) == 100 and all(h.metadata["sparse"] for h in hits)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


@KINDS
def test_an_approximate_segment_is_searched_with_the_parameter_of_its_manifest_entry(
    tmp_path: Path, kind: SegmentKind
) -> None:
    import faiss

    snapshot, v = _approximate_snapshot(tmp_path, kind)
    big = snapshot.approximate[0].segment
    index: Any = faiss.downcast_index(big.owner)  # type: ignore[arg-type]
    queries = normalize(v[:40] + np.random.default_rng(5).normal(scale=0.05, size=(40, 384)))
    names = [f"h{i}" for i in range(3000)] + [f"s{i}" for i in range(10)]
    exact = [{names[r] for r in np.argsort(-(v @ q))[:10]} for q in queries]

    def recall() -> float:
        found = [{h.id for h in search_snapshot(snapshot, q, 10)} for q in queries]
        return sum(len(f & e) for f, e in zip(found, exact, strict=True)) / 400

    # The chosen parameter (low: random vectors, a low minimum) misses neighbours; the largest finds them all.
    low = recall()
    big.search_param = int(index.nlist) if kind == "ivf" else 3000
    assert low < 1.0 and recall() == 1.0
