"""The gateway's texts: files fetched into the segment cache on first use, checked, shared, gone with their segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.gateway.search.snapshots import Snapshot
from services.gateway.search.texts import TextCache
from shared.errors import CorruptObject
from shared.index import segments, texts
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.segcache import SegmentCache
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "col1")


def _segment(store: LocalStore, seg_id: str, texts: list[str | None] | None) -> segments.LoadedSegment:
    n = 3 if texts is None else len(texts)
    ids = [f"{seg_id}-{i}" for i in range(n)]
    ref, files = segments.build(seg_id, normalize(np.ones((n, 384))), ids, [{}] * n, texts=texts)
    segments.upload(store, REF, ref, files)
    return segments.load(store, REF, ref)


def _texts(store: LocalStore, root: Path) -> TextCache:
    return TextCache(SegmentCache(store, root))


def _local(root: Path, seg_id: str) -> Path:
    return root / REF.segment_key(seg_id, segments.TEXTS_FILE)


def test_texts_are_fetched_once_then_read_from_the_local_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _segment(store, "s1", ["one", None, "three"])
    cache = _texts(store, tmp_path / "cache")
    assert cache.read(REF, seg, [2, 0, 1]) == ["three", "one", None]
    assert cache.cache.downloads == 1 and _local(tmp_path / "cache", "s1").exists()
    # The object store's copy is no longer needed: the cached file answers.
    store.delete(REF.segment_key("s1", segments.TEXTS_FILE))
    assert cache.read_many(REF, [(seg, 1), (seg, 0)]) == [None, "one"]
    # Another process on the host (a cache of its own over the same folder) uses the file already there.
    another = _texts(store, tmp_path / "cache")
    assert another.read(REF, seg, [0]) == ["one"] and another.cache.downloads == 0


def test_a_segment_without_texts_reads_as_none_without_any_fetch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _segment(store, "old", None)
    cache = _texts(store, tmp_path / "cache")
    assert cache.read(REF, seg, [0, 2]) == [None, None]
    assert not (tmp_path / "cache").exists()


def test_a_file_failing_its_checksum_is_refused_and_not_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _segment(store, "s1", ["one", "two"])
    store.put(REF.segment_key("s1", segments.TEXTS_FILE), texts.encode(["one", "too"]))
    cache = _texts(store, tmp_path / "cache")
    with pytest.raises(CorruptObject, match="SHA-256"):
        cache.read(REF, seg, [1])
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_damaged_local_file_is_fetched_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _segment(store, "s1", ["one", "two"])
    _texts(store, tmp_path / "cache").read(REF, seg, [0])
    local = _local(tmp_path / "cache", "s1")
    with local.open("r+b") as fh:  # damaged in place: its record still matches, but it no longer parses
        fh.write(b"garbage!")
    st = local.stat()
    again = _texts(store, tmp_path / "cache")
    assert again.read(REF, seg, [1]) == ["two"] and again.cache.downloads == 1
    assert local.stat().st_ino != st.st_ino or local.read_bytes()[:8] == texts.MAGIC


def test_segments_that_leave_the_index_leave_the_cache(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    first, second = _segment(store, "s1", ["a"]), _segment(store, "s2", ["b"])
    cache = _texts(store, tmp_path / "cache")
    held = cache.read(REF, first, [0]), cache.read(REF, second, [0])
    assert held == (["a"], ["b"])
    cache.retain(Snapshot.build(REF, "v2", [(second, ())]))
    assert cache.cache.evict(REF, {"s2"}) == ["s1"]  # what the registry does after a swap
    assert not _local(tmp_path / "cache", "s1").exists() and _local(tmp_path / "cache", "s2").exists()
    # A file still open when its segment left keeps answering for the request that holds it.
    assert cache.read(REF, second, [0]) == ["b"]
    cache.forget(REF.tenant, REF.name)
    cache.cache.evict_collection(REF)
    assert not (tmp_path / "cache" / REF.prefix).exists()
