"""Searching one snapshot: one FAISS call per segment, over its memory-mapped rows, and the hits merged top-k."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from services.gateway.search.snapshots import LiveSegment, Snapshot
    from shared.index.segments import LoadedSegment

# Below this share of allowed rows (a selective filter, many tombstones), an approximate segment is
# scanned exactly: the index would mostly visit excluded rows and come back short of k anyway.
EXACT_BELOW_SHARE = 0.02


@dataclass(frozen=True, slots=True)
class Hit:
    """A scored document, and where it is (what its text and vector are read from)."""

    id: str
    score: float
    metadata: dict[str, Any]
    # Where it is: not part of a hit's identity (two gateways' hits compare equal).
    segment: LoadedSegment | None = field(default=None, compare=False, repr=False)
    row: int = field(default=-1, compare=False)


def search_pool(workers: int, faiss_threads: int) -> ThreadPoolExecutor:
    """The threads searches run on, each with its own FAISS (OpenMP) thread count.

    One query is a memory-bound scan: a second OpenMP thread per search barely helps and its
    spinning steals the core another request needs, so searches default to one FAISS thread each
    and get their parallelism from concurrent requests. OpenMP settings are per calling thread,
    hence a dedicated pool whose threads are set up once (the query model runs elsewhere).
    """

    def setup() -> None:
        import faiss

        faiss.omp_set_num_threads(max(1, faiss_threads))

    size = workers or os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="search", initializer=setup)


def search_snapshot(
    snapshot: Snapshot, query: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None = None
) -> list[Hit]:
    """The ``k`` best live documents of ``snapshot`` for a unit ``query`` vector (inner product).

    Each segment is searched for its own best ``k`` (tombstones and filters excluded), in place: a
    float32 flat one by a scan of its rows, an int8 or approximate one through its own index; the hits
    are merged by score (ties keep manifest order). Blocking (FAISS releases the GIL); run it on the
    :func:`search_pool`.
    """
    import faiss

    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    q_ptr = faiss.swig_ptr(q)
    found: list[tuple[LiveSegment, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    for live in snapshot.segments:
        if live.segment.approximate:
            scores, rows = _search_approximate(live, q, k, filters)
        elif live.segment.quantized:
            scores, rows = _search_quantized(live, q, k, filters)
        else:
            scores, rows = _search_flat(live, q_ptr, q.shape[1], k, filters)
        if len(rows):
            found.append((live, scores, rows))
    if not found:
        return []
    if len(found) == 1:
        live, scores, rows = found[0]
        picks = [(live, int(r), float(sc)) for sc, r in zip(scores[:k].tolist(), rows[:k].tolist(), strict=True)]
    else:
        all_scores = np.concatenate([f[1] for f in found])
        owners = np.repeat(np.arange(len(found)), [len(f[2]) for f in found])
        all_rows = np.concatenate([f[2] for f in found])
        best = np.argsort(-all_scores, kind="stable")[:k]  # stable: ties keep segment order
        picks = [(found[owners[i]][0], int(all_rows[i]), float(all_scores[i])) for i in best.tolist()]
    return [
        Hit(live.segment.ids[row], score, live.segment.metadata[row], live.segment, row) for live, row, score in picks
    ]


def _allowed(live: LiveSegment, filters: dict[str, Any] | None) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Rows of a segment that are live and match every filter."""
    if not filters:
        return live.live
    mask = live.live.copy()
    for key, value in filters.items():
        mask &= live.matching(key, value)
    return mask


def _search_flat(
    live: LiveSegment, q_ptr: Any, dim: int, k: int, filters: dict[str, Any] | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Scan one flat segment exactly: FAISS's inner-product scan (what ``IndexFlatIP`` runs) over its rows in place.

    Returns the scores and rows found, best first.
    """
    import faiss

    seg = live.segment
    total = len(seg.ids)
    rows_ptr, selector = live.scan()
    allowed = live.live_count
    bitmap = None
    if filters:
        mask = _allowed(live, filters)
        allowed = int(mask.sum())
        bitmap = None if allowed == total else np.packbits(mask, bitorder="little")
        selector = None if bitmap is None else faiss.IDSelectorBitmap(total, faiss.swig_ptr(bitmap))
    kk = min(k, allowed)
    if kk == 0:
        return _NOTHING
    scores = np.empty(kk, dtype=np.float32)
    found = np.empty(kk, dtype=np.int64)
    args = (q_ptr, rows_ptr, dim, 1, total, kk, faiss.swig_ptr(scores), faiss.swig_ptr(found))
    if selector is None:
        faiss.knn_inner_product(*args)
    else:  # ``bitmap`` (or the live segment's own) stays referenced until the scan returns
        faiss.knn_inner_product(*args, selector)
    keep = found >= 0
    return (scores, found) if keep.all() else (scores[keep], found[keep])


_NOTHING: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] = (
    np.zeros(0, dtype=np.float32),
    np.zeros(0, dtype=np.int64),
)


def _search_quantized(
    live: LiveSegment, q: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Scan one int8 flat segment through its index (``IndexScalarQuantizer``): every code is decoded and scored.

    Exact over the codes, so it never comes back short of k; the scores are the query's inner product
    with the decoded rows. Tombstones and filters are excluded with the same selector as a flat scan.
    """
    import faiss

    seg = live.segment
    total = len(seg.ids)
    bitmap = live.bitmap
    allowed = live.live_count
    if filters:
        mask = _allowed(live, filters)
        allowed = int(mask.sum())
        bitmap = None if allowed == total else np.packbits(mask, bitorder="little")
    kk = min(k, allowed)
    if kk == 0:
        return _NOTHING
    index: Any = faiss.downcast_index(seg.owner)  # type: ignore[arg-type]
    params = None
    if bitmap is not None:  # ``bitmap`` stays referenced until the search returns
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(total, faiss.swig_ptr(bitmap)))  # type: ignore[call-arg]
    scores, rows = index.search(q, kk, params=params)
    keep = rows[0] >= 0
    return scores[0][keep], rows[0][keep]


def _search_approximate(
    live: LiveSegment, q: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Search one approximate (HNSW or IVF) segment, tombstones and filters excluded, without coming back short of k.

    The index is searched with the parameter its manifest entry chose at build (``efSearch`` or
    ``nprobe``, the smallest that reached the required recall). It skips excluded rows (FAISS
    ``IDSelector``) but explores only so many candidates, so when most rows are excluded it can find
    fewer than ``k`` allowed ones: then, or when the allowed rows are too few for the index to pay,
    the segment is scanned exactly (a graph's own flat rows; every list of an IVF one).
    """
    import faiss

    mask = _allowed(live, filters)
    allowed = int(mask.sum())
    kk = min(k, allowed)
    if kk == 0:
        return _NOTHING
    seg = live.segment
    owner: Any = seg.owner
    index: Any = faiss.downcast_index(owner)  # IndexHNSWFlat / IndexIVFFlat or their int8 kin (stubs lack fields)
    total = int(index.ntotal)
    bitmap = None if allowed == total else np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(total, faiss.swig_ptr(bitmap)) if bitmap is not None else None
    ivf = seg.kind == "ivf"
    rows = np.zeros((1, 0), dtype=np.int64)
    if allowed >= total * EXACT_BELOW_SHARE:
        if ivf:
            params = faiss.SearchParametersIVF(nprobe=seg.search_param or int(index.nprobe))  # type: ignore[call-arg]
        else:
            ef = max(seg.search_param or int(index.hnsw.efSearch), kk)
            params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
        if selector is not None:
            params.sel = selector
        scores, rows = index.search(q, kk, params=params)
    if int((rows >= 0).sum()) < kk:
        if ivf:  # probing every list of an IVF index is an exact scan (of its int8 codes, for IVF-SQ)
            exact = faiss.SearchParametersIVF(nprobe=int(index.nlist))  # type: ignore[call-arg]
            if selector is not None:
                exact.sel = selector
            scores, rows = index.search(q, kk, params=exact)
        else:
            storage = faiss.downcast_index(index.storage)
            flat = faiss.SearchParameters(sel=selector) if selector is not None else None  # type: ignore[call-arg]
            scores, rows = storage.search(q, kk, params=flat)
    keep = rows[0] >= 0
    return scores[0][keep], rows[0][keep]
