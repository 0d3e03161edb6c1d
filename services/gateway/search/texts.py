"""Documents' texts for the gateway: each segment's texts file, fetched into the segment cache on first use
and read by offset, so a gateway's memory does not grow with the texts of its collections.

A file is fetched (streamed to disk, SHA-256 checked against the manifest, renamed into place: see
:class:`shared.index.segcache.SegmentCache`) the first time one of its segment's texts is asked for;
after that a text costs two ``pread`` calls. It lies in its segment's folder of the segment cache,
so gateway processes on one host share it, and it leaves the cache with its segment (merged, rolled
back, the collection deleted); a request still reading it keeps its open descriptor. A segment
written before texts were kept has no file: its documents' texts are None.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from shared.errors import CorruptObject
from shared.index.segments import TEXTS_FILE
from shared.index.texts import TextFile

if TYPE_CHECKING:
    from services.gateway.search.snapshots import Snapshot
    from shared.index.layout import CollectionRef
    from shared.index.segcache import SegmentCache
    from shared.index.segments import LoadedSegment

log = structlog.get_logger(__name__)


class TextCache:
    """Open texts files by collection and segment, kept in ``cache``; blocking (run it in a thread)."""

    def __init__(self, cache: SegmentCache) -> None:
        self.cache = cache
        self._files: dict[tuple[str, str], TextFile] = {}  # (collection id, segment id) -> open file
        self._names: dict[str, tuple[str, str]] = {}  # collection id -> (tenant, name)
        self._guard = threading.Lock()
        self._fetching: dict[tuple[str, str], threading.Lock] = {}

    def read(self, ref: CollectionRef, segment: LoadedSegment, rows: Sequence[int]) -> list[str | None]:
        """The texts of ``rows`` of ``segment`` (None for a row without one, and every row of a segment
        written without texts): one fetch of the segment's file the first time, then two reads a row.

        Raises:
            CorruptObject: the fetched file fails its SHA-256 check or is malformed.
            ObjectNotFound: the store has no such file.
            StorageUnavailable: the store cannot be reached.
        """
        if segment.texts_sha256 is None or not rows:
            return [None] * len(rows)
        texts = self._open(ref, segment)
        return [texts.read(row) for row in rows]

    def read_many(self, ref: CollectionRef, located: Sequence[tuple[LoadedSegment, int]]) -> list[str | None]:
        """The texts of several ``(segment, row)``, in that order: one read per row, one open per segment.

        Raises:
            CorruptObject, ObjectNotFound, StorageUnavailable: as :meth:`read`.
        """
        rows_of: dict[int, tuple[LoadedSegment, list[int]]] = {}
        for segment, row in located:
            rows_of.setdefault(id(segment), (segment, []))[1].append(row)
        found: dict[tuple[int, int], str | None] = {}
        for key, (segment, rows) in rows_of.items():
            for row, text in zip(rows, self.read(ref, segment, rows), strict=True):
                found[(key, row)] = text
        return [found[(id(segment), row)] for segment, row in located]

    def _open(self, ref: CollectionRef, segment: LoadedSegment) -> TextFile:
        key = (ref.id, segment.id)
        found = self._files.get(key)
        if found is not None:
            return found
        with self._guard:
            lock = self._fetching.setdefault(key, threading.Lock())
            self._names[ref.id] = (ref.tenant, ref.name)
        with lock:  # one fetch per file; concurrent readers of it wait for that one
            found = self._files.get(key)
            if found is not None:
                return found
            opened = self._fetched(ref, segment)
            if opened.count != len(segment.ids):
                opened.close()
                self.cache.forget(ref, segment.id, TEXTS_FILE)
                raise CorruptObject(f"segment {segment.id} has {len(segment.ids)} rows and {opened.count} texts")
            with self._guard:
                self._files[key] = opened
                self._fetching.pop(key, None)
            return opened

    def _fetched(self, ref: CollectionRef, segment: LoadedSegment) -> TextFile:
        """The segment's texts file, opened from the segment cache (fetched again, once, if damaged on this disk)."""
        assert segment.texts_sha256 is not None
        path = self.cache.file(ref, segment.id, TEXTS_FILE, segment.texts_sha256)
        try:
            return TextFile(path)
        except CorruptObject as exc:
            log.warning("texts.damaged", segment=segment.id, error=str(exc))
        self.cache.forget(ref, segment.id, TEXTS_FILE)
        return TextFile(self.cache.file(ref, segment.id, TEXTS_FILE, segment.texts_sha256))

    def retain(self, snapshot: Snapshot) -> None:
        """Close the files of the snapshot's collection whose segments it no longer holds (the segment
        cache removes the files themselves with their segments)."""
        live = {s.segment.id for s in snapshot.segments}
        with self._guard:
            gone = [key for key in self._files if key[0] == snapshot.ref.id and key[1] not in live]
            dropped = [self._files.pop(key) for key in gone]
        del dropped  # each file closes once the last request reading it lets go

    def forget(self, tenant: str, name: str) -> None:
        """Close every file of a collection (deleted, here or on another replica)."""
        with self._guard:
            ids = [cid for cid, owner in self._names.items() if owner == (tenant, name)]
            for cid in ids:
                del self._names[cid]
                for key in [k for k in self._files if k[0] == cid]:
                    del self._files[key]
