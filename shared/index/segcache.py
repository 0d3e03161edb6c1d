"""A local on-disk cache of segment files: each downloaded once, verified once, then memory-mapped or read in place.

A segment file is stored under ``{root}/{its object key}``; beside it, ``{name}.verified`` records
the SHA-256 checked at download with the file's size, inode and modification time. A file whose
record matches its manifest digest and its current ``stat`` is trusted without hashing it again,
so a gateway that starts with its segments cached reads none of them. A file changed since (its
size, inode or time differ), or without a record, is downloaded again. Files are streamed to a
temporary name (never held whole in memory), hashed from disk and renamed, so another process on
the host never maps a partial file, and every process maps the same file: they share its pages in
the page cache.

Removing a file a process has mapped is safe on POSIX: the mapping keeps the pages until it is
closed. Eviction therefore only needs to know which segments this process's versions use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from shared.errors import CorruptObject
from shared.index.manifests import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.index.layout import CollectionRef
    from shared.index.manifests import SegmentRef
    from shared.index.storage import ObjectStore

VERIFIED_SUFFIX: Final = ".verified"

__all__ = ["SegmentCache"]


class SegmentCache:
    """Segment files of one object store, kept under ``root``."""

    def __init__(self, store: ObjectStore, root: Path) -> None:
        self.store = store
        self.root = root
        self.downloads = 0  # files fetched from the store since this cache was made
        self.verified_bytes = 0  # bytes hashed since this cache was made

    def _dir(self, ref: CollectionRef, segment_id: str) -> Path:
        return self.root / ref.segment_key(segment_id, "_").rsplit("/", 1)[0]

    def path(self, ref: CollectionRef, segment: SegmentRef, name: str) -> Path:
        """The local path of a segment file, downloaded and verified first if it is not cached yet.

        Raises:
            CorruptObject: the manifest lists no digest for ``name``, or the stored object fails it.
            ObjectNotFound: the object is missing from the store.
            StorageUnavailable: the store could not be reached.
        """
        digest = segment.files.get(name)
        if digest is None:
            raise CorruptObject(f"segment {segment.id} lists no {name}")
        return self.file(ref, segment.id, name, digest)

    def file(self, ref: CollectionRef, segment_id: str, name: str, digest: str) -> Path:
        """The local path of file ``name`` of a segment whose SHA-256 is ``digest``, fetched first if need be.

        The object is streamed to a temporary file in the cache's root (never held whole in memory: a
        large tier's index can be gigabytes), hashed from disk, and renamed into its segment's folder
        only if it matches, with its record beside it.

        Raises:
            CorruptObject: the stored object fails ``digest`` (nothing is kept).
            ObjectNotFound: the object is missing from the store.
            StorageUnavailable: the store could not be reached.
        """
        local = self._dir(ref, segment_id) / name
        if self._trusted(local, digest):
            return local
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{local.name}.", suffix=".part")
        os.close(fd)
        partial = Path(tmp)
        try:
            self.store.download(ref.segment_key(segment_id, name), partial)
            self.downloads += 1
            self.verified_bytes += partial.stat().st_size
            if sha256_file(partial) != digest:
                raise CorruptObject(f"segment {segment_id}/{name} fails its SHA-256 check")
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, local)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _write_atomically(_record(local), _stamp(local, digest).encode())
        return local

    def forget(self, ref: CollectionRef, segment_id: str, name: str) -> None:
        """Forget one cached file (found damaged when opened): the next :meth:`file` fetches it again."""
        local = self._dir(ref, segment_id) / name
        _record(local).unlink(missing_ok=True)
        local.unlink(missing_ok=True)

    def derived(
        self, ref: CollectionRef, segment: SegmentRef, source: str, name: str, make: Callable[[Path], bytes]
    ) -> Path:
        """The local path of a file made from a cached segment file (``make(path of source)``), made once per host.

        The made file sits beside its source with a record naming the source's digest, so a restart
        finds it made; a file without a matching record (made from another version of the source,
        changed since, or never finished) is made again. ``make`` runs only on a verified source.

        Raises:
            CorruptObject, ObjectNotFound, StorageUnavailable: as :meth:`path` for the source; and
                whatever ``make`` raises.
        """
        source_path = self.path(ref, segment, source)
        digest = f"{segment.files[source]}:{name}"
        local = source_path.with_name(name)
        if self._trusted(local, digest):
            return local
        _write_atomically(local, make(source_path))
        _write_atomically(_record(local), _stamp(local, digest).encode())
        return local

    def discard(self, ref: CollectionRef, segment_id: str) -> None:
        """Forget a segment's cached files (found damaged when opened): the next :meth:`path` downloads them."""
        shutil.rmtree(self._dir(ref, segment_id), ignore_errors=True)

    def cached(self, ref: CollectionRef) -> set[str]:
        """Ids of the segments of a collection that have a folder in the cache."""
        folder = self.root / ref.prefix / "segments"
        with contextlib.suppress(FileNotFoundError):
            return {entry.name for entry in folder.iterdir() if entry.is_dir()}
        return set()

    def evict(self, ref: CollectionRef, keep: set[str]) -> list[str]:
        """Remove the cached segments of a collection that are not in ``keep``; returns their ids."""
        removed = sorted(self.cached(ref) - keep)
        for segment_id in removed:
            self.discard(ref, segment_id)
        return removed

    def evict_collection(self, ref: CollectionRef) -> None:
        """Remove every cached file of a collection (it was deleted)."""
        shutil.rmtree(self.root / ref.prefix, ignore_errors=True)

    @staticmethod
    def _trusted(local: Path, digest: str) -> bool:
        try:
            recorded = _record(local).read_text()
            return recorded == _stamp(local, digest)
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return False


def _record(local: Path) -> Path:
    return local.with_name(local.name + VERIFIED_SUFFIX)


def _stamp(local: Path, digest: str) -> str:
    """What a verified file's record says: its digest and the ``stat`` it had when it was verified."""
    st = local.stat()
    return f"{digest} {st.st_size} {st.st_ino} {st.st_mtime_ns}\n"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
