"""Searching one snapshot: one FAISS call over its merged flat index, one per approximate segment, merged top-k."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    segment: LoadedSegment | None = None
    row: int = -1


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

    Blocking (FAISS releases the GIL); run it on the :func:`search_pool`.
    """
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    hits = _search_flat(snapshot, q, k, filters)
    if not snapshot.approximate:
        return hits
    for live in snapshot.approximate:
        hits.extend(_search_approximate(live, q, k, filters))
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:k]


def _allowed(live: LiveSegment, filters: dict[str, Any] | None) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Rows of a segment that are live and match every filter."""
    if not filters:
        return live.live
    mask = live.live.copy()
    for key, value in filters.items():
        mask &= live.matching(key, value)
    return mask


def _search_flat(snapshot: Snapshot, q: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None) -> list[Hit]:
    """Search the merged flat index: one FAISS call over every flat segment."""
    import faiss

    if snapshot.index is None:
        return []
    flat = snapshot.flat
    bitmap = snapshot.live_bitmap
    allowed = sum(s.live_count for s in flat)
    if filters:
        combined = np.concatenate([_allowed(live, filters) for live in flat])
        allowed = int(combined.sum())
        bitmap = np.packbits(combined, bitorder="little")
    kk = min(k, allowed)
    if kk == 0:
        return []
    params = None
    if bitmap is not None:  # ``bitmap`` must stay referenced until the search returns
        selector = faiss.IDSelectorBitmap(int(snapshot.index.ntotal), faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    scores, rows = snapshot.index.search(q, kk, params=params)
    hits = []
    for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
        if row < 0:
            continue
        s_idx = int(np.searchsorted(snapshot.offsets, row, side="right")) - 1
        seg = flat[s_idx].segment
        local = row - int(snapshot.offsets[s_idx])
        hits.append(Hit(seg.ids[local], score, seg.metadata[local], seg, local))
    return hits


def _search_approximate(
    live: LiveSegment, q: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None
) -> list[Hit]:
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
        return []
    seg = live.segment
    owner: Any = seg.owner
    index: Any = faiss.downcast_index(owner)  # IndexHNSWFlat or IndexIVFFlat (their stubs lack fields)
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
        if ivf:  # probing every list of an IVF-Flat index is an exact scan
            exact = faiss.SearchParametersIVF(nprobe=int(index.nlist))  # type: ignore[call-arg]
            if selector is not None:
                exact.sel = selector
            scores, rows = index.search(q, kk, params=exact)
        else:
            storage = faiss.downcast_index(index.storage)
            flat = faiss.SearchParameters(sel=selector) if selector is not None else None  # type: ignore[call-arg]
            scores, rows = storage.search(q, kk, params=flat)
    return [
        Hit(seg.ids[row], score, seg.metadata[row], seg, row)
        for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True)
        if row >= 0
    ]
