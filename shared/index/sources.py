"""The rows of a merge's source segments, read in chunks from their memory-mapped files.

A merge copies the kept rows of several segments into one new index. Holding them as one array
would count every vector twice (that array, then the index built from it); :class:`Stacked` is that
array without the copy: rows are numbered as if the sources' kept rows were stacked, and reading a
set of rows copies only those, straight from each source's mapped index file (a flat segment's or an
HNSW graph's rows by view, an IVF segment's reconstructed from its mapped lists).

A page of a mapped file, once read, stays in the process's resident set until the mapping closes, so a
merge reading its sources whole (the recall check's exact scan, then the copy into the new index)
would hold them all again beside the new index. After each read the source's pages are given back
with ``madvise(MADV_DONTNEED)``: on a read-only file mapping it only unmaps them (the page cache keeps
them and a later read maps them again), so the peak is the new index plus one chunk. Where the mapping
cannot be found (no ``/proc``), nothing is given back: the merge is the same, its peak higher.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from shared.index.segments import LoadedSegment

__all__ = ["Source", "Stacked", "mapped_regions"]


def mapped_regions(path: Path) -> list[tuple[int, int]]:
    """Address ranges (start, end) of this process's read-only mappings of the file ``path``.

    Empty where ``/proc/self/maps`` cannot be read (not Linux). A writable mapping is never listed:
    its pages may hold changes that giving them back would lose.
    """
    st = path.stat()
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        major, minor = (int(part, 16) for part in fields[3].split(":"))
        if int(fields[4]) != st.st_ino or (major, minor) != (os.major(st.st_dev), os.minor(st.st_dev)):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        found.append((start, end))
    return found


@cache
def _madvise() -> Any:
    return ctypes.CDLL(None, use_errno=True).madvise


def _give_back(regions: list[tuple[int, int]]) -> None:
    for start, end in regions:
        _madvise()(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED)


@dataclass(eq=False)
class Source:
    """One source segment of a merge: its opened index, the rows it keeps, and the mappings of its file.

    Built from a :class:`~shared.index.segments.LoadedSegment` by :meth:`of`, which keeps only the index
    (not the segment's ids, metadata and row map: the merge has copied what it keeps of those).
    """

    owner: object  # the FAISS index (keeps ``vectors`` alive)
    vectors: np.ndarray[Any, np.dtype[np.float32]]  # a view of its rows; empty for an IVF index (see ``read``)
    rows: np.ndarray[Any, np.dtype[np.int64]]  # the kept rows, in the order they are merged
    regions: list[tuple[int, int]]  # the mappings of its index file (see :func:`mapped_regions`)

    @classmethod
    def of(cls, segment: LoadedSegment, rows: np.ndarray[Any, Any], regions: list[tuple[int, int]]) -> Source:
        """The source reading ``rows`` of ``segment``, its pages given back already: opening it may have read
        some (an IVF segment's direct map reads each list's ids, and the kernel maps the pages around them)."""
        _give_back(regions)
        return cls(segment.owner, segment.vectors, np.asarray(rows, dtype=np.int64), regions)

    @classmethod
    def rows_of(
        cls, vectors: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], regions: list[tuple[int, int]]
    ) -> Source:
        """The source reading ``rows`` of a memory-mapped array of vectors (an int8 segment's originals)."""
        _give_back(regions)
        return cls(vectors, vectors, np.asarray(rows, dtype=np.int64), regions)

    def read(self, positions: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The vectors of kept rows ``positions`` (positions in ``rows``), copied; the file's pages given back."""
        rows = self.rows[positions]
        if len(self.vectors) or not len(rows):
            out = np.asarray(self.vectors[rows], dtype=np.float32)  # indexing by an array copies
        else:  # an IVF segment: rows live in its lists, read through its direct map
            import faiss

            index: Any = faiss.downcast_index(self.owner)  # type: ignore[arg-type]
            out = np.asarray(index.reconstruct_batch(rows), dtype=np.float32)
        _give_back(self.regions)
        return out


class Stacked:
    """The kept rows of several sources as one read-only ``(n, dim)`` matrix, read by arrays of row numbers."""

    def __init__(self, sources: list[Source], dim: int) -> None:
        self.sources = sources
        self.starts = np.cumsum([0, *(len(s.rows) for s in sources)])
        self.shape = (int(self.starts[-1]), dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Rows ``rows`` (an array of row numbers, any order) as a new float32 array."""
        rows = np.asarray(rows, dtype=np.int64)
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        if len(rows) and (owner == owner[0]).all():  # one source: its copy is the result
            first = int(owner[0])
            return self.sources[first].read(rows - self.starts[first])
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        for number in np.unique(owner):
            picked = owner == number
            out[picked] = self.sources[number].read(rows[picked] - self.starts[number])
        return out
