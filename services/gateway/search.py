"""Searching one snapshot: one FAISS call over its merged index, tombstones and filters excluded."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from services.gateway.snapshots import Snapshot


@dataclass(frozen=True, slots=True)
class Hit:
    """A scored document."""

    id: str
    score: float
    metadata: dict[str, Any]


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
    import faiss

    if snapshot.index is None:
        return []
    bitmap = snapshot.live_bitmap
    allowed = snapshot.documents
    if filters:
        masks = []
        for live in snapshot.segments:
            mask = live.live.copy()
            for key, value in filters.items():
                mask &= live.matching(key, value)
            masks.append(mask)
        combined = np.concatenate(masks)
        allowed = int(combined.sum())
        bitmap = np.packbits(combined, bitorder="little")
    kk = min(k, allowed)
    if kk == 0:
        return []
    params = None
    if bitmap is not None:  # ``bitmap`` must stay referenced until the search returns
        selector = faiss.IDSelectorBitmap(int(snapshot.index.ntotal), faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    scores, rows = snapshot.index.search(q, kk, params=params)
    hits = []
    for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
        if row < 0:
            continue
        s_idx = int(np.searchsorted(snapshot.offsets, row, side="right")) - 1
        seg = snapshot.segments[s_idx].segment
        local = row - int(snapshot.offsets[s_idx])
        hits.append(Hit(seg.ids[local], score, seg.metadata[local]))
    return hits
