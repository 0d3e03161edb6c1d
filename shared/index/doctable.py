"""A segment's document ids and metadata in a binary form that is read in place, never parsed whole.

The sidecar ``docs.jsonl.gz`` must be unzipped and parsed row by row before its first id can be read:
about 0.35 s per 100,000 rows, so 3.5 s for a million-vector collection every time a gateway starts.
This table holds the same rows so that opening it costs nothing: it is memory-mapped, an id is a
slice of it, and a document's row is found by binary search over an id order stored in it.

Layout (integers are unsigned 64-bit little-endian)::

    b"SFDOCS01"                 magic
    count                       rows
    id_offsets[count + 1]       where each row's id starts in the id data (and where it ends)
    meta_offsets[count + 1]     where each row's metadata starts in the metadata data
    order[count]                row numbers sorted by document id (code-point order, as ``sorted``)
    id data                     the ids in UTF-8, in row order
    metadata data               a JSON array of every row's metadata object, in row order

Because the metadata is one JSON array, a filter that needs every row's metadata parses it with one
``json.loads``; one row's metadata is one ``json.loads`` of its slice.
"""

from __future__ import annotations

import bisect
import json
import mmap
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, overload

import numpy as np

from shared.errors import CorruptObject
from shared.index.columns import Column, Rows

MAGIC: Final = b"SFDOCS01"
_U64: Final = struct.Struct("<Q")
_HEADER: Final = len(MAGIC) + _U64.size

__all__ = ["MAGIC", "DocTable", "IdColumn", "MetaColumn", "encode", "pieces"]


def encode(ids: Sequence[str], metadata: Sequence[dict[str, Any]]) -> bytes:
    """The table of rows whose ids and metadata are ``ids`` and ``metadata`` (in row order)."""
    rows = Rows.of(ids, metadata)
    return b"".join(pieces(rows.ids, rows.metadata))


def pieces(ids: Column, metadata: Column) -> Iterator[bytes]:
    """The table of rows whose ids are ``ids`` (UTF-8) and metadata ``metadata`` (compact JSON objects), in
    pieces: what a merge writes to its file without holding the table whole."""
    if len(ids) != len(metadata):
        raise ValueError("ids and metadata differ in length")
    count = len(ids)
    id_offsets = np.zeros(count + 1, dtype="<u8")
    np.cumsum(ids.lengths(), out=id_offsets[1:])
    # The metadata data is ``[m0,m1,...]``: row r's object starts after the "[" and the r objects and
    # commas before it, and ends before the comma (or "]") that follows it.
    meta_offsets = np.ones(count + 1, dtype="<u8")
    np.cumsum(metadata.lengths() + 1, out=meta_offsets[1:])
    meta_offsets[1:] += 1
    # Ids compared as UTF-8 bytes sort as the strings do (code-point order).
    order = np.array(sorted(range(count), key=ids.__getitem__), dtype="<u8")
    yield MAGIC + _U64.pack(count)
    yield id_offsets.tobytes()
    yield meta_offsets.tobytes()
    yield order.tobytes()
    del id_offsets, meta_offsets, order
    yield from ids.pieces()
    yield b"["
    yield from metadata.pieces(sep=b",")
    yield b"]"


class DocTable:
    """An opened table over ``buffer`` (bytes, or a read-only memory map of a table file).

    Reads are safe from several threads at once. The buffer is checked for its layout when opened
    (sizes and offsets at both ends), not for its content: a table file is written by this process's
    kin from a verified sidecar or fetched with a verified SHA-256.
    """

    def __init__(self, buffer: bytes | mmap.mmap) -> None:
        size = len(buffer)
        if size < _HEADER or bytes(buffer[: len(MAGIC)]) != MAGIC:
            raise CorruptObject("not a document table")
        (count,) = _U64.unpack_from(buffer, len(MAGIC))
        tables = _HEADER + 8 * (3 * count + 2)
        if tables > size:
            raise CorruptObject(f"a document table of {size} bytes cannot hold the offsets of {count} rows")
        self._buffer = buffer
        self._view = memoryview(buffer)
        self.count = int(count)
        words = np.frombuffer(buffer, dtype="<u8", count=3 * count + 2, offset=_HEADER)
        self._id_offsets = words[: count + 1]
        self._meta_offsets = words[count + 1 : 2 * count + 2]
        self._order = words[2 * count + 2 :]
        self._id_base = tables
        self._meta_base = tables + int(self._id_offsets[-1])
        meta_size = int(self._meta_offsets[-1]) if count else 2  # "[...]", or "[]"
        if (
            self._meta_base + meta_size != size
            or int(self._id_offsets[0]) != 0
            or bytes(buffer[self._meta_base : self._meta_base + 1]) != b"["
        ):
            raise CorruptObject("a document table's offsets do not match its data")
        self._all_metadata: list[dict[str, Any]] | None = None
        self._parse_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> DocTable:
        """Map a table file read-only (its pages stay in the page cache, shared by every process that maps it).

        Raises:
            CorruptObject: the file is not a well-formed table.
            FileNotFoundError: there is no such file.
        """
        with path.open("rb") as fh:
            if not path.stat().st_size:
                raise CorruptObject(f"{path.name} is empty")
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mapped)

    def id(self, row: int) -> str:
        """Row ``row``'s document id."""
        start = self._id_base + int(self._id_offsets[row])
        end = self._id_base + int(self._id_offsets[row + 1])
        return str(self._view[start:end], "utf-8")

    def metadata(self, row: int) -> dict[str, Any]:
        """Row ``row``'s metadata (a new dict each call unless every row's was parsed already)."""
        if self._all_metadata is not None:
            return self._all_metadata[row]
        start = self._meta_base + int(self._meta_offsets[row])
        end = self._meta_base + int(self._meta_offsets[row + 1]) - 1
        found: dict[str, Any] = json.loads(self._view[start:end].tobytes())
        return found

    def all_metadata(self) -> list[dict[str, Any]]:
        """Every row's metadata, parsed once (one ``json.loads``) and kept: what a metadata filter scans."""
        if self._all_metadata is None:
            with self._parse_lock:
                if self._all_metadata is None:
                    data = self._view[self._meta_base :].tobytes()
                    try:
                        parsed = json.loads(data)
                    except ValueError as exc:
                        raise CorruptObject(f"a document table's metadata does not parse: {exc}") from exc
                    if not isinstance(parsed, list) or len(parsed) != self.count:
                        raise CorruptObject("a document table's metadata does not match its rows")
                    self._all_metadata = parsed
        return self._all_metadata

    def id_column(self) -> Column:
        """Every row's id as UTF-8, read in place (no copy)."""
        offsets = self._id_offsets.view(np.int64) + self._id_base
        return Column(self._view, offsets[:-1], offsets[1:])

    def metadata_column(self) -> Column:
        """Every row's metadata as compact JSON, read in place (no copy, no parse)."""
        offsets = self._meta_offsets.view(np.int64) + self._meta_base
        return Column(self._view, offsets[:-1], offsets[1:] - 1)  # each ends before its "," (or the "]")

    def order(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Row numbers sorted by document id (a view of the table: no copy)."""
        return self._order.view(np.int64)

    def row_of(self, doc_id: str) -> int | None:
        """The row of ``doc_id`` (None: not in this table): a binary search, O(log n) ids read."""
        order = self._order
        at = bisect.bisect_left(range(self.count), doc_id, key=lambda i: self.id(int(order[i])))
        if at < self.count:
            row = int(order[at])
            if self.id(row) == doc_id:
                return row
        return None


class IdColumn(Sequence[str]):
    """A table's ids as a read-only sequence, read one at a time."""

    def __init__(self, table: DocTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.count

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self.table.id(r) for r in range(*index.indices(self.table.count))]
        if index < 0:
            index += self.table.count
        if not 0 <= index < self.table.count:
            raise IndexError(index)
        return self.table.id(index)

    def __iter__(self) -> Iterator[str]:
        return (self.table.id(r) for r in range(self.table.count))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking equality, as a list's


class MetaColumn(Sequence[dict[str, Any]]):
    """A table's metadata as a read-only sequence: one row parsed on demand, all rows parsed at once on iteration."""

    def __init__(self, table: DocTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.count

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return self.table.all_metadata()[index]
        if index < 0:
            index += self.table.count
        if not 0 <= index < self.table.count:
            raise IndexError(index)
        return self.table.metadata(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.table.all_metadata())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
