"""Approximate segment indexes (HNSW graphs, IVF lists), built in chunks and checked for recall.

An approximate index is never trusted on its parameters alone: :func:`build_checked` draws queries
from the segment's own vectors (held out of the index while it is checked), finds their exact top-k
by inner product over the segment, and raises the search parameter (HNSW ``efSearch``, IVF
``nprobe``) step by step until recall@k reaches the asked minimum. The parameter found and the
recall measured are stored in the manifest and the gateway searches the segment with that
parameter; when no step up to the cap reaches the minimum the segment is built exact (flat) instead.

The same check measures an int8 (scalar-quantised) segment against exact float32 search: a flat one
(``IndexScalarQuantizer``, one try: it scans every code) or an approximate one (``IndexHNSWSQ``,
``IndexIVFScalarQuantizer``, the same ladder), so a quantised segment is never published on trust either.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import faiss

    from shared.index.sources import Stacked

ApproximateKind = Literal["hnsw", "ivf"]
# What :func:`build_checked` builds: an approximate kind, or ``flat`` (only quantised: float32 flat is exact).
CheckedKind = Literal["flat", "hnsw", "ivf"]

# What an index is built from: an array, or a merge's source segments read in chunks (no stacked copy).
Vectors: TypeAlias = "np.ndarray[Any, Any] | Stacked"

# Vectors added to an index per call: FAISS copies each chunk into the index, so the peak beyond the
# index itself is one chunk (~30 MB at 384 dimensions), not a second copy of the segment.
ADD_CHUNK: Final = 20_000

# Exact ground truth is computed against this many segment rows at a time (200 queries x 50,000
# rows of scores: 40 MB), so checking a segment of millions of vectors needs no n x n matrix.
TRUTH_CHUNK: Final = 50_000

# IVF: lists per segment ~ 4 sqrt(n) (the FAISS guideline), but no more than leave each list the 39
# training vectors FAISS's k-means asks for, nor fewer than 32 (a quarter of them is what a search may
# probe): 10,000 vectors, 9,800 of them trained on beside the recall check's 200, get 251 lists, not 400
# (no under-trained lists, a third less build time, the same search time). Trained on up to 64 vectors
# per list, and probing more than a quarter of the lists is rejected: such a segment is scanned nearly
# whole, so an exact (flat) one costs about the same and is always right.
IVF_LISTS_PER_SQRT: Final = 4
IVF_TRAIN_PER_LIST: Final = 64
IVF_MIN_TRAIN_PER_LIST: Final = 39
IVF_MIN_LISTS: Final = 32
IVF_MAX_PROBE_SHARE: Final = 0.25

# int8 segments use FAISS's ``QT_8bit``: one byte per dimension on a range trained per dimension (its
# minimum and maximum over the segment). On unit vectors in 384 dimensions it kept recall@10 against exact
# float32 search at 0.984-0.986 where ``QT_8bit_uniform`` (one range for all dimensions) kept 0.978-0.982
# (20,000 vectors: topic clusters, noisy clusters, uniform; bench/quantization.py measures it).
SQ_TYPE: Final = "QT_8bit"


@dataclass(frozen=True)
class HnswParams:
    """How an HNSW segment is built: links per node, build beam, and the largest search beam tried."""

    m: int
    ef_construction: int
    ef_search: int  # the cap of the calibration ladder (and the beam of an unchecked graph)


@dataclass(frozen=True)
class RecallTarget:
    """What every approximate segment must show before it is published."""

    min_recall: float = 0.95  # recall@k against exact search, on queries drawn from the segment
    queries: int = 200
    k: int = 10


@dataclass(frozen=True)
class Calibration:
    """The search parameter chosen for an approximate index and the recall measured with it."""

    search_param: int
    recall: float


def ivf_lists(n: int, trained_on: int | None = None) -> int:
    """How many IVF lists a segment of ``n`` vectors gets, its lists trained on ``trained_on`` of them (all: None;
    the recall check holds some out)."""
    guideline = max(1, round(IVF_LISTS_PER_SQRT * math.sqrt(n)))
    trainable = n if trained_on is None else trained_on
    return min(guideline, max(trainable // IVF_MIN_TRAIN_PER_LIST, IVF_MIN_LISTS))


def ladder(kind: CheckedKind, index: faiss.Index, hnsw: HnswParams | None) -> list[int]:
    """The search parameters tried, smallest first: doubling up to the cap (a flat index has none: one try, 0)."""
    if kind == "flat":
        return [0]
    if kind == "hnsw":
        if hnsw is None:
            raise ValueError("an HNSW index needs HnswParams")
        cap, value = max(hnsw.ef_search, 16), 16
    else:
        cap, value = max(1, int(_ivf(index).nlist * IVF_MAX_PROBE_SHARE)), 1
    steps = []
    while value < cap:
        steps.append(value)
        value *= 2
    return [*steps, cap]


def _ivf(index: faiss.Index) -> Any:
    import faiss

    return faiss.extract_index_ivf(index)


def _empty(kind: CheckedKind, dim: int, n: int, hnsw: HnswParams | None, quantized: bool, trained_on: int) -> Any:
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    qt = getattr(faiss.ScalarQuantizer, SQ_TYPE)
    if kind == "flat":
        if not quantized:
            raise ValueError("only a quantised flat index is checked (a float32 one is exact)")
        return faiss.IndexScalarQuantizer(dim, qt, ip)
    if kind == "hnsw":
        if hnsw is None:
            raise ValueError("an HNSW index needs HnswParams")
        graph = faiss.IndexHNSWSQ(dim, qt, hnsw.m, ip) if quantized else faiss.IndexHNSWFlat(dim, hnsw.m, ip)
        graph.hnsw.efConstruction = hnsw.ef_construction
        return graph
    if quantized:
        return faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, ivf_lists(n, trained_on), qt, ip)
    return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_lists(n, trained_on), ip)


def train_ranges(index: Any, vectors: Vectors) -> None:
    """Train a ``QT_8bit`` scalar quantiser (an ``IndexScalarQuantizer``, or an ``IndexHNSWSQ``'s storage) on
    every row of ``vectors``: each dimension's minimum and range, read in chunks.

    What FAISS's own training computes (``RS_minmax``), without the transposed copy of the rows it makes:
    no row of the segment falls outside its range. A dimension whose values are all equal gets a tiny
    range rather than zero (which would divide by zero when encoding).
    """
    import faiss

    storage: Any = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    dim = vectors.shape[1]
    low = np.full(dim, np.inf, dtype=np.float32)
    high = np.full(dim, -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.asarray(vectors[np.arange(start, min(len(vectors), start + ADD_CHUNK))], dtype=np.float32)
        low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
    spans = np.maximum(high - low, np.float32(1e-7))
    faiss.copy_array_to_vector(np.concatenate([low, spans]).astype(np.float32), storage.sq.trained)
    storage.is_trained = True
    index.is_trained = True


def _chunks(vectors: Vectors, rows: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, np.dtype[np.float32]]]:
    for start in range(0, len(rows), ADD_CHUNK):
        yield np.ascontiguousarray(vectors[rows[start : start + ADD_CHUNK]], dtype=np.float32)


def _add(index: Any, vectors: Vectors, rows: np.ndarray[Any, Any], lists: np.ndarray[Any, Any] | None = None) -> None:
    """Add ``vectors[rows]`` in chunks: the peak beyond the index is one chunk.

    ``lists`` (IVF): each row's list, assigned beforehand by :func:`_reserve_lists`, so not assigned again.
    """
    import faiss

    for start, chunk in zip(range(0, len(rows), ADD_CHUNK), _chunks(vectors, rows), strict=True):
        if lists is None:
            index.add(chunk)
        else:
            assigned = np.ascontiguousarray(lists[start : start + len(chunk)], dtype=np.int64)
            index.add_core(len(chunk), faiss.swig_ptr(chunk), None, faiss.swig_ptr(assigned))


def _reserve(vector: Any, size: int) -> None:
    """Give a FAISS vector (empty, owned) the capacity of ``size`` items, so adding them never reallocates it.

    A FAISS vector grows by doubling: at the last reallocation the old and the new buffer, together up to
    twice the final size, are alive at once. (Resizing keeps the capacity when it shrinks.)
    """
    vector.resize(size)
    vector.resize(0)


def _reserve_hnsw(index: Any, n: int, hnsw: HnswParams) -> None:
    """Reserve an empty HNSW index's rows and links for ``n`` vectors (links: level 0's ``2M``, plus the
    upper levels' expected ``M / (M - 1)``, rounded up; more are rare and only grow the vector as before)."""
    import faiss

    storage: Any = faiss.downcast_index(index.storage)
    _reserve(storage.codes, n * storage.code_size)
    _reserve(index.hnsw.neighbors, n * (2 * hnsw.m + 2))


def _reserve_lists(index: Any, vectors: Vectors, order: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    """Assign the rows of each of ``order`` to their IVF lists, chunk by chunk as :func:`_add` would, and
    reserve each list's room for all of them; returns the assignments (8 bytes a row)."""
    import faiss

    none = np.zeros(0, dtype=np.int64)
    assigned = [
        np.concatenate([none, *(index.quantizer.assign(chunk, 1)[:, 0] for chunk in _chunks(vectors, rows))])
        for rows in order
    ]
    counts = np.bincount(np.concatenate(assigned).astype(np.int64), minlength=index.nlist)
    invlists: Any = faiss.downcast_InvertedLists(index.invlists)
    for number in np.flatnonzero(counts):
        invlists.resize(int(number), int(counts[number]))
        invlists.resize(int(number), 0)
    return assigned


def search_params(kind: CheckedKind, value: int) -> Any:
    """FAISS search parameters for ``kind`` with its parameter set to ``value`` (None for a flat index)."""
    import faiss

    if kind == "flat":
        return None
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=value)  # type: ignore[attr-defined]
    return faiss.SearchParametersIVF(nprobe=value)  # type: ignore[call-arg]


def exact_top(
    vectors: Vectors, queries: np.ndarray[Any, Any], k: int, rows: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    """Each query's exact top ``k`` by inner product over ``vectors[rows]`` (all rows: None), scanned in chunks.

    Returns positions in ``rows`` (row numbers when ``rows`` is None).
    """
    rows = np.arange(len(vectors)) if rows is None else rows
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_pos = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(rows), TRUTH_CHUNK):
        scores = queries @ np.asarray(vectors[rows[start : start + TRUTH_CHUNK]], dtype=np.float32).T
        pos = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores, pos = np.hstack([best_scores, scores]), np.hstack([best_pos, pos])
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_pos = np.take_along_axis(scores, keep, 1), np.take_along_axis(pos, keep, 1)
    return best_pos


def recall_at(found: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]) -> float:
    """Share of the true top-k rows found, over all queries."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size if truth.size else 1.0


@dataclass(frozen=True)
class Checked:
    """An approximate index built and checked: its rows' order, the parameter chosen, every try."""

    index: faiss.Index
    order: np.ndarray[Any, Any]  # row i of the index is ``vectors[order[i]]``
    chosen: Calibration | None  # None: no parameter up to the cap reached the target
    tries: list[Calibration]


def build_checked(
    kind: CheckedKind,
    vectors: Vectors,
    hnsw: HnswParams | None,
    target: RecallTarget,
    *,
    seed: int = 0,
    quantized: bool = False,
) -> Checked:
    """Build an approximate index over ``vectors`` and find the smallest search parameter reaching ``target``.

    ``target.queries`` rows drawn at random from the segment are held out while the rest is indexed:
    they are the queries, their exact top-k over the indexed rows the ground truth, so the check
    measures the index on unseen queries of the segment's own distribution (a query that is itself
    a row of the index finds its way there too easily: recall 0.99 where unseen queries get 0.95).
    The search parameter is doubled from its smallest value up to the cap until recall@k reaches
    the minimum; then the held-out rows are added, last (see ``order``).

    ``quantized``: the index holds int8 codes (``kind`` ``flat``: an ``IndexScalarQuantizer``, tried once);
    the ground truth is still exact float32 search over ``vectors``. Its ranges are trained on every row,
    held-out ones included (they are rows of the segment too, added last).

    The index's rows (and an IVF index's lists) are reserved before they are added: the peak is the
    finished index plus one chunk and the recall check's small buffers, never a reallocation's two copies.
    """
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(n, size=min(target.queries, n // 2), replace=False))
    rest = np.setdiff1d(np.arange(n), held, assume_unique=True)
    index = _empty(kind, dim, n, hnsw, quantized, trained_on=len(rest))
    lists: list[np.ndarray[Any, Any] | None] = [None, None]
    if kind == "ivf":  # the coarse lists, and an IVF-SQ index's ranges (of residuals) with them
        sample = np.sort(rng.choice(rest, size=min(len(rest), index.nlist * IVF_TRAIN_PER_LIST), replace=False))
        index.cp.seed = seed
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        lists = [*_reserve_lists(index, vectors, [rest, held])]
    else:
        if quantized:
            train_ranges(index, vectors)
        if kind == "hnsw":
            assert hnsw is not None  # checked by ``_empty``
            _reserve_hnsw(index, n, hnsw)
        else:  # a quantised flat index: its codes
            _reserve(index.codes, n * index.code_size)
    _add(index, vectors, rest, lists[0])
    k = min(target.k, len(rest))
    tries: list[Calibration] = []
    chosen = None
    if len(held) and k:
        queries = np.ascontiguousarray(vectors[held], dtype=np.float32)
        truth = exact_top(vectors, queries, k, rest)
        for value in ladder(kind, index, hnsw):
            beam = max(value, k) if kind == "hnsw" else value
            _, found = index.search(queries, k, params=search_params(kind, beam))
            tries.append(Calibration(value, round(recall_at(found, truth), 4)))
            if tries[-1].recall >= target.min_recall:
                chosen = tries[-1]
                break
    _add(index, vectors, held, lists[1])
    built: faiss.Index = index
    return Checked(built, np.concatenate([rest, held]), chosen, tries)
