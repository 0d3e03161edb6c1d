"""What semaflow relies on in FAISS beyond adding and searching, pinned so an upgrade that changes it fails here.

The gateway opens segment files memory-mapped (``IO_FLAG_MMAP_IFC``) and reads an index's rows as a
view of that storage (:mod:`shared.index.segments`); it scans flat rows in place with
``knn_inner_product``, the scan ``IndexFlatIP`` runs, and filters rows with a bitmap packed
least-significant bit first (:mod:`services.gateway.search.engine`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from shared.index.documents import normalize

DIM = 16


def _vectors(n: int, seed: int = 3) -> np.ndarray[Any, np.dtype[np.float32]]:
    return normalize(np.random.default_rng(seed).normal(size=(n, DIM))).astype(np.float32)


def test_the_rows_of_a_loaded_index_are_a_view_of_its_storage() -> None:
    built = faiss.IndexFlatIP(DIM)
    built.add(_vectors(20))
    owner = faiss.deserialize_index(faiss.serialize_index(built))
    index = faiss.downcast_index(owner)
    assert isinstance(index, faiss.IndexFlat)

    rows = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)

    assert not rows.flags.owndata  # no copy
    np.testing.assert_array_equal(rows, index.reconstruct_n(0, index.ntotal))
    rows[0] = 0.0  # and writes reach the index itself
    assert not index.reconstruct(0).any()


def test_a_bitmap_selector_reads_row_i_from_bit_i_mod_8_of_byte_i_div_8() -> None:
    vectors = _vectors(40)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[[1, 9, 10, 33]] = True
    bitmap = np.packbits(allowed, bitorder="little")

    selector = faiss.IDSelectorBitmap(len(vectors), faiss.swig_ptr(bitmap))
    _, rows = index.search(vectors[:3], 10, params=faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]

    assert {int(r) for r in rows.ravel() if r >= 0} == {1, 9, 10, 33}


def test_an_hnsw_graph_exposes_its_search_depth_and_its_flat_rows() -> None:
    vectors = _vectors(200)
    graph = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    graph.add(vectors)
    owner = faiss.deserialize_index(faiss.serialize_index(graph))  # must outlive the typed proxies below
    loaded: Any = faiss.downcast_index(owner)
    assert isinstance(loaded, faiss.IndexHNSWFlat)

    storage = faiss.downcast_index(loaded.storage)
    assert isinstance(storage, faiss.IndexFlat) and storage.ntotal == len(vectors)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[:100] = True
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(vectors), faiss.swig_ptr(bitmap))
    params = faiss.SearchParametersHNSW(efSearch=max(int(loaded.hnsw.efSearch), 50), sel=selector)  # type: ignore[attr-defined]
    _, rows = loaded.search(vectors[150:152], 50, params=params)

    found = [int(r) for r in rows.ravel() if r >= 0]
    assert found and all(r < 100 for r in found)


def test_an_index_read_with_mmap_ifc_maps_its_rows_from_the_file(tmp_path: Path) -> None:
    vectors = _vectors(500)
    built = faiss.IndexFlatIP(DIM)
    built.add(vectors)
    path = tmp_path / "index.faiss"
    faiss.write_index(built, str(path))

    owner = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    index: Any = faiss.downcast_index(owner)  # an IndexFlatIP (its stub lacks get_xb)
    rows = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)

    assert str(path) in Path(f"/proc/{os.getpid()}/maps").read_text()
    np.testing.assert_array_equal(rows, vectors)
    want, got = built.search(vectors[:5], 10), index.search(vectors[:5], 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_knn_inner_product_over_rows_is_the_scan_an_index_flat_ip_runs() -> None:
    vectors = _vectors(300)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    query = _vectors(1, seed=9)
    allowed = np.ones(300, dtype=bool)
    allowed[::3] = False
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(300, faiss.swig_ptr(bitmap))
    scores, rows = np.empty(10, dtype=np.float32), np.empty(10, dtype=np.int64)

    faiss.knn_inner_product(
        faiss.swig_ptr(query), faiss.swig_ptr(vectors), DIM, 1, 300, 10,
        faiss.swig_ptr(scores), faiss.swig_ptr(rows), selector,
    )  # fmt: skip

    want_scores, want_rows = index.search(query, 10, params=faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
    np.testing.assert_array_equal(rows, want_rows[0])
    np.testing.assert_array_equal(scores, want_scores[0])
    assert allowed[rows].all()
