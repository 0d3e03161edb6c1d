"""A segment's texts file: every row's text, each readable alone by offset without loading the others.

Layout (integers are unsigned 64-bit little-endian)::

    b"SFTEXTS1"                 magic
    count                       rows
    offsets[count + 1]          where each row's entry starts in the data (and where the data ends)
    data                        entries, in row order

An entry is empty for a document without text (it was sent as a vector only), else ``0x01`` followed by
the text in UTF-8 (so an empty text and no text differ). Reading row ``r`` costs two ``pread`` calls:
its two offsets, then its entry; nothing else of the file is read.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np

from shared.errors import CorruptObject
from shared.index.columns import TEXT_TAG, Column, text_entry

MAGIC: Final = b"SFTEXTS1"
_U64: Final = struct.Struct("<Q")
_HEADER: Final = len(MAGIC) + _U64.size

__all__ = ["MAGIC", "TextFile", "decode", "encode", "entries", "pieces", "texts_of"]


def encode(texts: Sequence[str | None]) -> bytes:
    """The texts file of rows whose texts are ``texts`` (None: the row has none)."""
    return b"".join(pieces(Column.of(text_entry(t) for t in texts)))


def pieces(entries: Column) -> Iterator[bytes]:
    """The texts file of rows whose entries (see :func:`shared.index.columns.text_entry`) are ``entries``, in
    pieces: what a merge writes to its file without holding it whole."""
    offsets = np.zeros(len(entries) + 1, dtype="<u8")
    np.cumsum(entries.lengths(), out=offsets[1:])
    yield MAGIC + _U64.pack(len(entries))
    yield offsets.tobytes()
    del offsets
    yield from entries.pieces()


def entries(data: bytes) -> Column:
    """Every row's entry, read in place from a texts file's bytes (what a merge copies, undecoded).

    Raises:
        CorruptObject: ``data`` is not a well-formed texts file.
    """
    count = _layout(data[:_HEADER], len(data))
    offsets = np.frombuffer(data, dtype="<u8", count=count + 1, offset=_HEADER).astype(np.int64)
    base = _HEADER + 8 * (count + 1)
    if base + int(offsets[-1]) != len(data) or bool((np.diff(offsets) < 0).any()) or int(offsets[0]) != 0:
        raise CorruptObject("a texts file's offsets do not match its data")
    return Column(data, offsets[:-1] + base, offsets[1:] + base)


def _entry(raw: bytes) -> str | None:
    if not raw:
        return None
    if raw[:1] != TEXT_TAG:
        raise CorruptObject("a texts file entry has an unknown tag")
    try:
        return raw[1:].decode()
    except UnicodeDecodeError as exc:
        raise CorruptObject(f"a texts file entry is not UTF-8: {exc}") from exc


def _layout(head: bytes, size: int) -> int:
    """The row count of a texts file of ``size`` bytes beginning with ``head``, checked against its size."""
    if len(head) < _HEADER or head[: len(MAGIC)] != MAGIC:
        raise CorruptObject("not a texts file")
    (count,) = _U64.unpack_from(head, len(MAGIC))
    if _HEADER + 8 * (count + 1) > size:
        raise CorruptObject(f"a texts file of {size} bytes cannot hold the offsets of {count} rows")
    return int(count)


def decode(data: bytes) -> list[str | None]:
    """Every row's text.

    Raises:
        CorruptObject: ``data`` is not a well-formed texts file.
    """
    return texts_of(entries(data))


def texts_of(found: Column) -> list[str | None]:
    """The texts of a column of entries (see :func:`entries`).

    Raises:
        CorruptObject: an entry is not a well-formed one.
    """
    return [_entry(raw) for raw in found]


class TextFile:
    """An open texts file read by offset (``os.pread``: safe from several threads at once).

    The descriptor stays open until :meth:`close` or until the object is collected, so a reader that
    holds it keeps reading a file unlinked meanwhile.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        """Open and check the header.

        Raises:
            CorruptObject: it is not a well-formed texts file.
            OSError: it cannot be opened.
        """
        self._fd = fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, fd)
        try:
            size = os.fstat(self._fd).st_size
            self.count = _layout(os.pread(self._fd, _HEADER, 0), size)
            self._base = _HEADER + 8 * (self.count + 1)
            (end,) = _U64.unpack(os.pread(self._fd, 8, self._base - 8))
            if self._base + end != size:
                raise CorruptObject("a texts file's offsets do not match its size")
        except BaseException:
            self._closer()
            raise

    def read(self, row: int) -> str | None:
        """Row ``row``'s text.

        Raises:
            IndexError: there is no such row.
            CorruptObject: its entry is malformed.
        """
        if not 0 <= row < self.count:
            raise IndexError(f"row {row} of a texts file of {self.count} rows")
        start, end = struct.unpack("<2Q", os.pread(self._fd, 16, _HEADER + 8 * row))
        if end < start:
            raise CorruptObject(f"row {row} of a texts file ends before it starts")
        return _entry(os.pread(self._fd, end - start, self._base + start)) if end > start else None

    def close(self) -> None:
        """Close the descriptor now (idempotent)."""
        self._closer()
