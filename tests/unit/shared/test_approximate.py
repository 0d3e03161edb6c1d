"""The recall check of approximate segments, with real FAISS indexes over small random vector sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.index import approximate, segments
from shared.index.approximate import ApproximateKind, HnswParams, RecallTarget
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "x")


def _random(n: int = 3000, seed: int = 3) -> np.ndarray[Any, Any]:
    """Uniform unit vectors: the hardest case, where a small search parameter finds few true neighbours."""
    return normalize(np.random.default_rng(seed).normal(size=(n, 384)))


def _clustered(n: int = 3000, seed: int = 3) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 384))
    return normalize(centres[rng.integers(0, 20, n)] + rng.normal(scale=0.9, size=(n, 384)))


def _recall_of(checked: approximate.Checked, vectors: np.ndarray[Any, Any], queries: np.ndarray[Any, Any]) -> float:
    """Recall@10 of the built index, with its chosen parameter, for queries it never saw."""
    assert checked.chosen is not None
    kind: ApproximateKind = "hnsw" if hasattr(checked.index, "hnsw") else "ivf"
    params = approximate.search_params(kind, max(checked.chosen.search_param, 10))
    _, rows = checked.index.search(np.ascontiguousarray(queries, dtype=np.float32), 10, params=params)
    found = np.where(rows >= 0, checked.order[rows], -1)
    return approximate.recall_at(found, approximate.exact_top(vectors, queries, 10))


def test_the_hnsw_search_beam_is_raised_until_recall_reaches_the_minimum() -> None:
    vectors = _random()
    checked = approximate.build_checked("hnsw", vectors, HnswParams(16, 40, 1024), RecallTarget(min_recall=0.9))
    first, chosen = checked.tries[0], checked.chosen
    assert first.search_param == 16 and first.recall < 0.9  # the smallest beam falls well short here
    assert chosen is not None and chosen.search_param > 16 and chosen.recall >= 0.9
    assert [t.search_param for t in checked.tries] == [16 * 2**i for i in range(len(checked.tries))]
    assert sorted(checked.order.tolist()) == list(range(len(vectors)))  # every row indexed once


def test_the_ivf_probe_count_is_raised_until_recall_reaches_the_minimum() -> None:
    vectors = _clustered()
    checked = approximate.build_checked("ivf", vectors, HnswParams(16, 40, 64), RecallTarget(min_recall=0.9))
    assert checked.tries[0].search_param == 1 and checked.tries[0].recall < 0.9
    assert checked.chosen is not None and checked.chosen.search_param > 1 and checked.chosen.recall >= 0.9


def test_the_measured_recall_is_what_unseen_queries_get() -> None:
    # Queries of the same distribution the index never saw agree with the recall measured at build.
    data = _clustered(3200)
    vectors, queries = data[:3000], data[3000:]
    checked = approximate.build_checked("hnsw", vectors, HnswParams(16, 40, 1024), RecallTarget(min_recall=0.95))
    assert checked.chosen is not None
    assert abs(_recall_of(checked, vectors, queries) - checked.chosen.recall) < 0.05


def test_a_segment_whose_cap_falls_short_is_built_flat_and_searched_exactly(tmp_path: Path) -> None:
    vectors = _random(2000)
    ids = [f"d{i}" for i in range(2000)]
    # Given random vectors, where efSearch 32 (the cap here) cannot reach recall 0.99,
    ref, files = segments.build(
        "s1", vectors, ids, [{}] * 2000, kind="hnsw", hnsw=HnswParams(16, 40, 32), target=RecallTarget(0.99)
    )
    # the segment is exact, and says nothing of a search parameter or recall,
    assert (ref.kind, ref.search_param, ref.recall) == ("flat", None, None)
    store = LocalStore(tmp_path)
    segments.upload(store, REF, ref, files)
    loaded = segments.load(store, REF, ref)
    assert not loaded.approximate and loaded.ids == ids
    # and its search finds the true nearest neighbours.
    _, rows = loaded.owner.search(vectors[:5], 1)  # type: ignore[attr-defined]
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_a_checked_segment_stores_its_parameter_in_the_manifest_entry_and_the_index(tmp_path: Path) -> None:
    import faiss

    vectors = _clustered(2000)
    ids = [f"d{i}" for i in range(2000)]
    ref, files = segments.build(
        "s1", vectors, ids, [{"n": i} for i in range(2000)], kind="hnsw", hnsw=HnswParams(16, 40, 256)
    )
    assert ref.kind == "hnsw" and ref.search_param is not None and ref.recall is not None and ref.recall >= 0.95
    store = LocalStore(tmp_path)
    segments.upload(store, REF, ref, files)
    loaded = segments.load(store, REF, ref)
    assert loaded.search_param == ref.search_param
    graph: Any = faiss.downcast_index(loaded.owner)  # type: ignore[arg-type]
    assert graph.hnsw.efSearch == ref.search_param
    # Rows may be reordered (the held-out queries go last) but each id keeps its vector and metadata.
    row = loaded.row_of("d123")
    assert row is not None
    assert np.allclose(loaded.vectors[row], vectors[123]) and loaded.metadata[row] == {"n": 123}


def test_ivf_lists_follow_the_guideline_but_each_keeps_enough_training_vectors() -> None:
    # 4 sqrt(n) lists where every list still gets FAISS's 39 training vectors (100,000: 1,265)...
    assert approximate.ivf_lists(100_000) == round(4 * 100_000**0.5)
    assert approximate.ivf_lists(1_000_000) == 4_000
    # ... fewer where it would not (10,000 vectors: 256 lists of 39, not 400 of 25), never below 32 ...
    assert approximate.ivf_lists(10_000) == 10_000 // 39
    assert approximate.ivf_lists(1_000) == 32
    # (counting only the rows the lists are trained on: the recall check holds 200 out)
    assert approximate.ivf_lists(10_000, trained_on=9_800) == 251
    # ... and never more lists than the guideline gives a tiny segment.
    assert approximate.ivf_lists(10) == 13
