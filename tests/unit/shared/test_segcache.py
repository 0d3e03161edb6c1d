"""The gateway's local segment cache: each file downloaded once, verified once, re-fetched when damaged, evicted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.errors import CorruptObject
from shared.index import segments
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.manifests import SegmentRef
from shared.index.segcache import SegmentCache
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "col1")


def _stored(store: LocalStore, segment_id: str, n: int = 40, seed: int = 3) -> tuple[SegmentRef, np.ndarray[Any, Any]]:
    vectors = normalize(np.random.default_rng(seed).normal(size=(n, 384)))
    ids = [f"{segment_id}-{i}" for i in range(n)]
    ref, files = segments.build(segment_id, vectors, ids, [{"n": i} for i in range(n)])
    segments.upload(store, REF, ref, files)
    return ref, vectors


def test_a_file_is_downloaded_and_verified_once_even_across_restarts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg, _ = _stored(store, "s1")
    cache = SegmentCache(store, tmp_path / "cache")

    first = cache.path(REF, seg, segments.INDEX_FILE)
    again = cache.path(REF, seg, segments.INDEX_FILE)

    assert first == again and first.read_bytes() == store.get(REF.segment_key("s1", segments.INDEX_FILE))
    assert cache.downloads == 1
    restarted = SegmentCache(store, tmp_path / "cache")  # a new process over the same directory
    assert restarted.path(REF, seg, segments.INDEX_FILE) == first
    assert restarted.downloads == 0 and restarted.verified_bytes == 0  # trusted without hashing it again


def test_a_stored_file_that_fails_its_digest_is_refused_and_not_cached(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg, _ = _stored(store, "s1")
    key = REF.segment_key("s1", segments.INDEX_FILE)
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF
    store.put(key, bytes(data))
    cache = SegmentCache(store, tmp_path / "cache")

    with pytest.raises(CorruptObject, match="SHA-256"):
        cache.path(REF, seg, segments.INDEX_FILE)
    assert cache.cached(REF) == set()


def test_a_cached_file_changed_since_it_was_verified_is_downloaded_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg, vectors = _stored(store, "s1")
    cache = SegmentCache(store, tmp_path / "cache")
    local = cache.path(REF, seg, segments.INDEX_FILE)
    original = local.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 0xFF
    local.write_bytes(bytes(damaged))

    assert cache.path(REF, seg, segments.INDEX_FILE).read_bytes() == original
    assert cache.downloads == 2
    opened = segments.open_cached(cache, REF, seg)
    np.testing.assert_array_equal(opened.vectors, vectors.astype(np.float32))


def test_a_damaged_file_that_kept_its_size_and_time_is_caught_when_it_fails_to_open(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg, vectors = _stored(store, "s1")
    cache = SegmentCache(store, tmp_path / "cache")
    local = cache.path(REF, seg, segments.INDEX_FILE)
    cache.path(REF, seg, segments.DOCS_TABLE_FILE)
    st = local.stat()
    with local.open("r+b") as f:  # the header, in place: same inode and size
        f.write(b"\0" * 16)
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))

    opened = segments.open_cached(cache, REF, seg)

    assert cache.downloads == 4  # the index and the document table, then both again (the segment is discarded whole)
    np.testing.assert_array_equal(opened.vectors, vectors.astype(np.float32))


def test_an_opened_segment_maps_its_cached_file_without_copying_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg, vectors = _stored(store, "s1", n=2000)
    cache = SegmentCache(store, tmp_path / "cache")

    opened = segments.open_cached(cache, REF, seg)

    local = cache.path(REF, seg, segments.INDEX_FILE)
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    assert str(local) in maps
    assert not opened.vectors.flags.owndata
    np.testing.assert_array_equal(opened.vectors, vectors.astype(np.float32))
    assert opened.ids[5] == "s1-5" and opened.metadata[5] == {"n": 5}


def test_eviction_removes_only_segments_not_kept_and_mapped_ones_stay_readable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    refs = {name: _stored(store, name, seed=i) for i, name in enumerate(["s1", "s2", "s3"])}
    cache = SegmentCache(store, tmp_path / "cache")
    opened = {name: segments.open_cached(cache, REF, seg) for name, (seg, _) in refs.items()}
    assert cache.cached(REF) == {"s1", "s2", "s3"}

    assert cache.evict(REF, {"s2"}) == ["s1", "s3"]

    assert cache.cached(REF) == {"s2"}
    # A process that mapped an evicted file keeps reading it (the mapping outlives the name).
    np.testing.assert_array_equal(opened["s1"].vectors, refs["s1"][1].astype(np.float32))
    # Opening it again downloads it again.
    segments.open_cached(cache, REF, refs["s1"][0])
    assert cache.cached(REF) == {"s1", "s2"}
    cache.evict_collection(REF)
    assert cache.cached(REF) == set()


def test_an_empty_segment_opens_from_the_cache(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    ref, files = segments.build("e", np.zeros((0, 384), dtype=np.float32), [], [])
    segments.upload(store, REF, ref, files)

    opened = segments.open_cached(SegmentCache(store, tmp_path / "cache"), REF, ref)

    assert opened.vectors.shape == (0, 384) and opened.ids == []
