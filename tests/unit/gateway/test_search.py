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


def test_a_snapshot_searches_its_segments_in_place() -> None:
    snapshot, v = _snapshot(deleted=("d1",))
    assert snapshot.memory_bytes == 20 * 384 * 4
    assert [s.segment.vectors.base is not None for s in snapshot.segments] == [True, True]  # views, not copies
    np.testing.assert_array_equal(snapshot.segments[1].segment.vectors, v[10:])
    assert snapshot.documents == 19


def test_empty_snapshot_returns_nothing() -> None:
    empty = Snapshot.build(CollectionRef("t", "c", "x"), "v0", [])
    assert search_snapshot(empty, np.ones(384, dtype=np.float32), 5) == []


def test_segments_keep_manifest_order_and_their_rows() -> None:
    snapshot, v = _snapshot()
    assert [s.segment.id for s in snapshot.segments] == ["s1", "s2"]
    np.testing.assert_array_equal(np.concatenate([s.segment.vectors for s in snapshot.segments]), v)


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


def _merged_reference(
    snapshot: Snapshot, q: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None
) -> list[tuple[str, float]]:
    """How searches ran before segments were searched in place: every flat segment copied into one
    ``IndexFlatIP``, searched once with a bitmap of allowed rows, its hits merged with each approximate segment's."""
    import faiss

    from services.gateway.search.engine import _allowed, _search_approximate

    flat = snapshot.flat
    hits: list[tuple[str, float]] = []
    if flat:
        merged = faiss.IndexFlatIP(384)
        for live in flat:
            merged.add(np.ascontiguousarray(live.segment.vectors, dtype=np.float32))
        allowed = np.concatenate([_allowed(live, filters) for live in flat])
        ids = [doc for live in flat for doc in live.segment.ids]
        kk = min(k, int(allowed.sum()))
        if kk:
            bitmap = np.packbits(allowed, bitorder="little")
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)))  # type: ignore[call-arg]
            scores, rows = merged.search(q.reshape(1, -1), kk, params=params)
            hits = [(ids[r], s) for s, r in zip(scores[0].tolist(), rows[0].tolist(), strict=True) if r >= 0]
    for live in snapshot.approximate:
        scores, rows = _search_approximate(live, q.reshape(1, -1).astype(np.float32), k, filters)
        hits.extend((live.segment.ids[r], s) for s, r in zip(scores.tolist(), rows.tolist(), strict=True))
    hits.sort(key=lambda h: h[1], reverse=True)
    return hits[:k]


@KINDS
def test_mapped_segments_answer_exactly_as_the_merged_index_did(tmp_path: Path, kind: SegmentKind) -> None:
    """Flat and approximate segments opened from the cache (memory-mapped), with tombstones and filters:
    the same ids and the same scores, bit for bit, as the merged in-memory index searched before."""
    from shared.index import segments
    from shared.index.segcache import SegmentCache
    from shared.index.segments import HnswParams, RecallTarget, build

    rng = np.random.default_rng(21)
    store, where = LocalStore(tmp_path / "objects"), CollectionRef("t", "c", "x")
    cache = SegmentCache(store, tmp_path / "cache")
    v = normalize(rng.normal(size=(3600, 384)))
    sizes = {"big": 3000, "f1": 250, "f2": 200, "f3": 150}
    start, parts, deleted_all = 0, [], set()
    for name, size in sizes.items():
        ids = [f"{name}-{i}" for i in range(size)]
        meta = [{"colour": ["red", "green", "blue"][i % 3], "n": i} for i in range(size)]
        seg_kind: SegmentKind = kind if name == "big" else "flat"
        hnsw = HnswParams(16, 64, 64)
        ref, files = build(name, v[start : start + size], ids, meta, kind=seg_kind, hnsw=hnsw, target=RecallTarget(0.3))
        assert ref.kind == seg_kind
        segments.upload(store, where, ref, files)
        deleted = tuple(ids[::7])
        deleted_all |= set(deleted)
        parts.append((segments.open_cached(cache, where, ref), deleted))
        start += size
    mapped = Snapshot.build(where, "v1", parts)
    queries = normalize(v[rng.choice(3600, 30, replace=False)] + rng.normal(scale=0.1, size=(30, 384)))

    for filters in (None, {"colour": "red"}, {"colour": "blue", "n": 4}):
        for q in queries:
            got = [(h.id, h.score) for h in search_snapshot(mapped, q, 10, filters)]
            assert got == _merged_reference(mapped, q, 10, filters)
            assert not {doc for doc, _ in got} & deleted_all


def test_a_new_version_keeps_the_segment_objects_it_shares_with_the_previous_one() -> None:
    snapshot, v = _snapshot()
    s1, s2 = (live.segment for live in snapshot.segments)
    s3 = _segment("s3", v[:5], [f"e{i}" for i in range(5)], [{}] * 5)

    after = Snapshot.build(snapshot.ref, "v2", [(s1, ()), (s2, ("d12",)), (s3, ())], snapshot)

    assert after.segments[0] is snapshot.segments[0]  # same segment, same tombstones: shared as it is
    assert after.segments[1].segment is s2 and after.segments[1] is not snapshot.segments[1]
    assert not after.segments[1].live[2] and after.segments[1].bitmap is not None
    assert snapshot.segments[1].live.all()  # the previous version is untouched
    assert [h.id for h in search_snapshot(after, v[12], 1)] != ["d12"]
