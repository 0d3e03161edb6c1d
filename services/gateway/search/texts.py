"""Documents' texts for the gateway: each segment's texts file, fetched into a local directory on first use
and read by offset, so a gateway's memory does not grow with the texts of its collections.

A file is fetched (streamed to disk, SHA-256 checked against the manifest, then renamed into place) the
first time one of its segment's texts is asked for; after that a text costs two ``pread`` calls. Files
are named by segment and hash, so gateway processes on one host share them and a file found on disk is
one that passed its check. A segment that leaves a collection's index (merged, rolled back, the
collection deleted) has its file removed; a request still reading it keeps its open descriptor.
A segment written before texts were kept has no file: its documents' texts are None.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from shared.errors import CorruptObject
from shared.index.segments import TEXTS_FILE
from shared.index.texts import TextFile

if TYPE_CHECKING:
    from services.gateway.search.snapshots import Snapshot
    from shared.index.layout import CollectionRef
    from shared.index.segments import LoadedSegment
    from shared.index.storage import ObjectStore

log = structlog.get_logger(__name__)
_HASH_CHUNK = 1 << 20


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class TextCache:
    """Open texts files by collection and segment; blocking (run it in a thread)."""

    def __init__(self, store: ObjectStore, root: Path) -> None:
        self.store = store
        self.root = root
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

    def _path(self, ref: CollectionRef, segment: LoadedSegment) -> Path:
        assert segment.texts_sha256 is not None
        return self.root / ref.id / f"{segment.id}-{segment.texts_sha256[:16]}.texts"

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
            path = self._path(ref, segment)
            try:
                opened = TextFile(path)  # fetched earlier, by this process or another on this host
            except (FileNotFoundError, CorruptObject) as exc:
                if isinstance(exc, CorruptObject):  # damaged on this disk since: fetch it again
                    log.warning("texts.damaged", segment=segment.id, error=str(exc))
                self._fetch(ref, segment, path)
                opened = TextFile(path)
            if opened.count != len(segment.ids):
                opened.close()
                path.unlink(missing_ok=True)
                raise CorruptObject(f"segment {segment.id} has {len(segment.ids)} rows and {opened.count} texts")
            with self._guard:
                self._files[key] = opened
                self._fetching.pop(key, None)
            return opened

    def _fetch(self, ref: CollectionRef, segment: LoadedSegment, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            self.store.download(ref.segment_key(segment.id, TEXTS_FILE), partial)
            if _file_sha256(partial) != segment.texts_sha256:
                raise CorruptObject(f"segment {segment.id}/{TEXTS_FILE} fails its SHA-256 check")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        log.info("texts.fetched", collection=ref.name, tenant=ref.tenant, segment=segment.id)

    def retain(self, snapshot: Snapshot) -> None:
        """Forget (and remove) the files of the snapshot's collection whose segments it no longer holds."""
        live = {s.segment.id for s in snapshot.segments}
        with self._guard:
            gone = [key for key in self._files if key[0] == snapshot.ref.id and key[1] not in live]
            dropped = [self._files.pop(key) for key in gone]
        for key in gone:
            for path in (self.root / key[0]).glob(f"{key[1]}-*.texts"):
                path.unlink(missing_ok=True)
        del dropped  # each file closes once the last request reading it lets go

    def forget(self, tenant: str, name: str) -> None:
        """Forget (and remove) every file of a collection (deleted, here or on another replica)."""
        with self._guard:
            ids = [cid for cid, owner in self._names.items() if owner == (tenant, name)]
            for cid in ids:
                del self._names[cid]
                for key in [k for k in self._files if k[0] == cid]:
                    del self._files[key]
        for cid in ids:
            shutil.rmtree(self.root / cid, ignore_errors=True)
