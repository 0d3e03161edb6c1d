from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import CorruptObject
from shared.index import segments
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "col1")


def test_a_segment_round_trips_vectors_ids_and_metadata(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    vectors = normalize(np.random.default_rng(3).normal(size=(50, 384)))
    ids = [f"d{i}" for i in range(50)]
    meta = [{"n": i, "tag": "x" if i % 2 else None} for i in range(50)]
    ref, files = segments.build("seg1", vectors, ids, meta)
    segments.upload(store, REF, ref, files)

    loaded = segments.load(store, REF, ref)

    np.testing.assert_array_equal(loaded.vectors, vectors.astype(np.float32))
    assert loaded.ids == ids
    assert loaded.metadata == meta
    assert loaded.rows["d7"] == 7
    assert loaded.owner is not None  # the vectors are a view into this object's memory


def test_an_empty_segment_loads(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref, files = segments.build("seg0", np.zeros((0, 384), dtype=np.float32), [], [])
    segments.upload(store, REF, ref, files)
    loaded = segments.load(store, REF, ref)
    assert loaded.vectors.shape == (0, 384)
    assert loaded.ids == []


def test_a_changed_index_file_fails_its_checksum(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref, files = segments.build("seg1", normalize(np.ones((2, 384))), ["a", "b"], [{}, {}])
    segments.upload(store, REF, ref, files)
    key = REF.segment_key("seg1", segments.INDEX_FILE)
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF
    store.put(key, bytes(data))
    with pytest.raises(CorruptObject, match="SHA-256"):
        segments.load(store, REF, ref)
