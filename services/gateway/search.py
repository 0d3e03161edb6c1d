"""Searching one snapshot: each live segment, tombstones and filters excluded, top-k merged."""

from __future__ import annotations

import heapq
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


def search_snapshot(
    snapshot: Snapshot, query: np.ndarray[Any, Any], k: int, filters: dict[str, Any] | None = None
) -> list[Hit]:
    """The ``k`` best live documents of ``snapshot`` for a unit ``query`` vector (inner product).

    Blocking (FAISS releases the GIL); call from a worker thread.
    """
    import faiss

    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    candidates: list[tuple[float, int, int]] = []  # (score, segment index, row)
    for s_idx, live in enumerate(snapshot.segments):
        mask = None
        if filters:
            mask = np.ones(len(live.live), dtype=bool)
            for key, value in filters.items():
                mask &= live.matching(key, value)
            allowed = int((mask & live.live).sum())
        else:
            allowed = live.live_count
        kk = min(k, allowed)
        if kk == 0:
            continue
        selector, _keepalive = live.selector(mask)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None  # type: ignore[call-arg]
        scores, rows = live.segment.index.search(q, kk, params=params)
        candidates.extend((float(sc), s_idx, int(r)) for sc, r in zip(scores[0], rows[0], strict=True) if r >= 0)
    best = heapq.nlargest(k, candidates, key=lambda c: c[0])
    hits = []
    for score, s_idx, row in best:
        seg = snapshot.segments[s_idx].segment
        hits.append(Hit(seg.ids[row], score, seg.metadata[row]))
    return hits
