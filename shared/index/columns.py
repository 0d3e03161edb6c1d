"""Rows of byte strings held as one buffer and two offset arrays, not as a Python object per row.

A merge carries every merged row's id, metadata and text from its sources to the new segment's files. As
Python objects (a ``str`` and a ``dict`` a row) that is about 0.35 KB a row beside the row's own bytes:
350 MB at a million rows, held through the whole merge. As columns it is the bytes themselves and two
8-byte offsets, gathered straight from the sources' files without parsing them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

Offsets = np.ndarray[Any, np.dtype[np.int64]]

# Bytes gathered per piece when a column is written out in pieces (a merge writes files of hundreds of MB).
PIECE_BYTES: Final = 1 << 20
# What precedes a text in a texts file's entry (an entry without it is a row without text).
TEXT_TAG: Final = b"\x01"

__all__ = ["TEXT_TAG", "Column", "ColumnBuilder", "Rows", "json_bytes", "text_entry"]


class Column(Sequence[bytes]):
    """``len(starts)`` byte strings: row ``r`` is ``data[starts[r]:ends[r]]``.

    ``data`` may be any buffer (bytes, a memory map, a view of a file read whole): a column over a file's
    rows reads them in place.
    """

    def __init__(self, data: bytes | bytearray | memoryview, starts: Offsets, ends: Offsets) -> None:
        if len(starts) != len(ends):
            raise ValueError("a column needs one start and one end a row")
        self.data = memoryview(data).cast("B")
        self.starts = starts
        self.ends = ends

    @classmethod
    def of(cls, items: Iterable[bytes]) -> Column:
        """A column of ``items``, in order."""
        builder = ColumnBuilder()
        for item in items:
            builder.append(item)
        return builder.build()

    @classmethod
    def empty(cls, count: int) -> Column:
        """``count`` empty byte strings."""
        zeros = np.zeros(count, dtype=np.int64)
        return cls(b"", zeros, zeros)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, row: int) -> bytes:  # type: ignore[override]  # rows one at a time, no slices
        return bytes(self.data[int(self.starts[row]) : int(self.ends[row])])

    def __iter__(self) -> Iterator[bytes]:
        data = self.data
        for start, end in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            yield bytes(data[start:end])

    def lengths(self) -> Offsets:
        return (self.ends - self.starts).astype(np.int64)

    def nbytes(self) -> int:
        """The rows' bytes, together."""
        return int(self.lengths().sum())

    def pieces(self, rows: Iterable[int] | None = None, sep: bytes = b"") -> Iterator[bytes]:
        """The rows (``rows`` of them, in that order; all by default) concatenated, ``sep`` between each two, in
        pieces of about :data:`PIECE_BYTES`: what writes a column to a file without a copy of it whole."""
        data = self.data
        starts, ends = self.starts, self.ends
        order = range(len(starts)) if rows is None else rows
        piece = bytearray()
        first = True
        for r in order:
            if not first:
                piece += sep
            first = False
            piece += data[int(starts[r]) : int(ends[r])]
            if len(piece) >= PIECE_BYTES:
                yield bytes(piece)
                piece.clear()
        if piece:
            yield bytes(piece)


class ColumnBuilder:
    """Gathers rows into one new buffer, from single byte strings or from ranges of another column's buffer."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends: list[int] = []

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, item: bytes) -> None:
        self._data += item
        self._ends.append(len(self._data))

    def take(self, column: Column, rows: Sequence[int] | np.ndarray[Any, Any]) -> None:
        """Append ``column``'s ``rows``, in that order (copies their bytes, nothing else)."""
        data, data_out, ends = column.data, self._data, self._ends
        for start, end in zip(column.starts[rows].tolist(), column.ends[rows].tolist(), strict=True):
            data_out += data[start:end]
            ends.append(len(data_out))

    def build(self) -> Column:
        offsets = np.zeros(len(self._ends) + 1, dtype=np.int64)
        offsets[1:] = self._ends
        self._ends = []
        data, self._data = self._data, bytearray()
        return Column(data, offsets[:-1], offsets[1:])


def json_bytes(value: Any) -> bytes:
    """``value`` as the document table stores metadata: compact JSON, UTF-8 (not ASCII-escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def text_entry(text: str | None) -> bytes:
    """A text as a texts file stores it (:mod:`shared.index.texts`): empty for none, else ``0x01`` and UTF-8."""
    return b"" if text is None else TEXT_TAG + text.encode()


@dataclass(frozen=True)
class Rows:
    """A segment's rows as columns: ids (UTF-8), metadata (compact JSON objects, UTF-8) and text entries (as the
    texts file stores them), or no texts at all (the segment gets no texts file)."""

    ids: Column
    metadata: Column
    texts: Column | None

    @classmethod
    def of(
        cls, ids: Sequence[str], metadata: Sequence[dict[str, Any]], texts: Sequence[str | None] | None = None
    ) -> Rows:
        if len(ids) != len(metadata) or (texts is not None and len(texts) != len(ids)):
            raise ValueError("ids, metadata and texts differ in length")
        return cls(
            Column.of(i.encode() for i in ids),
            Column.of(json_bytes(m) for m in metadata),
            None if texts is None else Column.of(text_entry(t) for t in texts),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def id(self, row: int) -> str:
        return self.ids[row].decode()

    def id_list(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The ids of rows ``start`` to ``stop`` as strings (a chunk at a time: a list of a million costs 70 MB)."""
        stop = len(self) if stop is None else min(stop, len(self))
        data, starts, ends = self.ids.data, self.ids.starts, self.ids.ends
        return [str(data[int(starts[r]) : int(ends[r])], "utf-8") for r in range(start, stop)]

    def taken(self, order: Sequence[int] | np.ndarray[Any, Any]) -> Rows:
        """These rows in ``order`` (row ``k`` of the result is row ``order[k]``), as new columns."""

        def take(column: Column) -> Column:
            builder = ColumnBuilder()
            builder.take(column, np.asarray(order, dtype=np.int64))
            return builder.build()

        return Rows(take(self.ids), take(self.metadata), None if self.texts is None else take(self.texts))
