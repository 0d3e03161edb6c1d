from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import CorruptObject
from shared.index import segments
from shared.index import texts as texts_module
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.manifests import SegmentKind
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
    assert loaded.row_of("d7") == 7 and loaded.row_of("nope") is None
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


def test_texts_are_written_beside_the_index_and_read_back_in_row_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    vectors = normalize(np.random.default_rng(4).normal(size=(5, 384)))
    ids = ["a", "b", "c", "d", "e"]
    texts = ["alpha", None, "gamma", "", "epsilon"]
    ref, files = segments.build("seg1", vectors, ids, [{}] * 5, texts=texts)
    segments.upload(store, REF, ref, files)

    assert segments.TEXTS_FILE in ref.files
    assert segments.read_texts(store, REF, ref) == texts
    loaded = segments.load(store, REF, ref)
    assert loaded.texts_sha256 == ref.files[segments.TEXTS_FILE]


def test_a_segment_without_texts_loads_and_reads_as_no_texts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref, files = segments.build("old", normalize(np.ones((2, 384))), ["a", "b"], [{}, {}])
    segments.upload(store, REF, ref, files)
    assert segments.TEXTS_FILE not in ref.files
    assert segments.read_texts(store, REF, ref) == [None, None]
    assert segments.load(store, REF, ref).texts_sha256 is None


def test_load_does_not_fetch_the_texts_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref, files = segments.build("seg1", normalize(np.ones((2, 384))), ["a", "b"], [{}, {}], texts=["x", "y"])
    segments.upload(store, REF, ref, files)
    store.delete(REF.segment_key("seg1", segments.TEXTS_FILE))
    assert segments.load(store, REF, ref).ids == ["a", "b"]


def test_a_changed_texts_file_fails_its_checksum(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref, files = segments.build("seg1", normalize(np.ones((2, 384))), ["a", "b"], [{}, {}], texts=["x", "y"])
    segments.upload(store, REF, ref, files)
    store.put(REF.segment_key("seg1", segments.TEXTS_FILE), texts_module.encode(["x", "z"]))
    with pytest.raises(CorruptObject, match="SHA-256"):
        segments.read_texts(store, REF, ref)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_an_approximate_segment_keeps_texts_and_vectors_with_their_rows(tmp_path: Path, kind: SegmentKind) -> None:
    # Given rows whose text and vector say which document they are,
    store = LocalStore(tmp_path)
    n = 400
    vectors = normalize(np.random.default_rng(5).normal(size=(n, 384)))
    ids = [f"d{i:03d}" for i in range(n)]
    texts = [f"text of d{i:03d}" if i % 7 else None for i in range(n)]
    # When they are built into an approximate segment (whose rows may be reordered),
    ref, files = segments.build(
        "big",
        vectors,
        ids,
        [{"i": i} for i in range(n)],
        texts=texts,
        kind=kind,
        hnsw=segments.HnswParams(16, 40, 64),
        target=segments.RecallTarget(min_recall=0.1),  # random vectors: what is measured here is not recall
    )
    assert ref.kind == kind
    segments.upload(store, REF, ref, files)
    loaded = segments.load(store, REF, ref)
    # Then every row's id, metadata, text and vector still belong together.
    stored = segments.read_texts(store, REF, ref)
    for row, doc in enumerate(loaded.ids):
        i = int(doc[1:])
        assert loaded.metadata[row] == {"i": i}
        assert stored[row] == texts[i]
        np.testing.assert_allclose(loaded.vector(row), vectors[i], atol=1e-6)


def test_rows_in_id_order_are_computed_once() -> None:
    seg = segments.LoadedSegment("s", np.zeros((3, 384), dtype=np.float32), ["b", "c", "a"], [{}, {}, {}])
    assert seg.id_order().tolist() == [2, 0, 1]
    assert seg.id_order() is seg.id_order()
