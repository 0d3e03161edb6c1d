"""Document tables: a segment's ids and metadata read in place, and made once per host for older segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.errors import CorruptObject
from shared.index import doctable, segments
from shared.index.doctable import DocTable, IdColumn, MetaColumn
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.manifests import SegmentRef
from shared.index.segcache import SegmentCache
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "col1")
IDS = ["b", "a", "ü-naïve", "", 'c,"metadata":{}', "a0"]
META: list[dict[str, Any]] = [{"n": 1}, {}, {"tag": "ü", "nested": {"x": [1, 2]}}, {"n": None}, {"k": "v"}, {"n": 0.5}]


def test_a_table_reads_back_every_row_and_finds_each_id() -> None:
    table = DocTable(doctable.encode(IDS, META))

    assert list(IdColumn(table)) == IDS and IdColumn(table)[-1] == "a0"
    assert [table.metadata(r) for r in range(len(IDS))] == META
    assert list(MetaColumn(table)) == META and MetaColumn(table)[1:3] == META[1:3]
    assert [IDS[r] for r in table.order().tolist()] == sorted(IDS)
    assert [table.row_of(d) for d in IDS] == list(range(len(IDS)))
    assert table.row_of("zzz") is None and table.row_of("a1") is None
    with pytest.raises(IndexError):
        IdColumn(table)[len(IDS)]


def test_an_empty_table_has_no_rows() -> None:
    table = DocTable(doctable.encode([], []))

    assert table.count == 0 and list(IdColumn(table)) == [] and table.all_metadata() == []
    assert table.row_of("a") is None


@pytest.mark.parametrize("cut", [0, 7, 20, -1])
def test_a_truncated_or_foreign_table_is_refused(cut: int) -> None:
    data = doctable.encode(IDS, META)

    with pytest.raises(CorruptObject):
        DocTable(data[:cut])
    with pytest.raises(CorruptObject):
        DocTable(b"SFTEXTS1" + data[8:])


def _stored(store: LocalStore, n: int, *, with_table: bool) -> SegmentRef:
    vectors = normalize(np.random.default_rng(5).normal(size=(n, 384)))
    ids = [f"doc-{(i * 7919) % n:05d}" for i in range(n)]  # rows not in id order
    ref, files = segments.build("s1", vectors, ids, [{"n": i, "even": i % 2 == 0} for i in range(n)])
    if not with_table:  # a segment written before document tables existed
        del files[segments.DOCS_TABLE_FILE]
        ref = ref.model_copy(update={"files": {k: v for k, v in ref.files.items() if k != segments.DOCS_TABLE_FILE}})
    segments.upload(store, REF, ref, files)
    return ref


@pytest.mark.parametrize("with_table", [True, False])
def test_an_opened_segment_reads_ids_and_metadata_from_its_mapped_table(tmp_path: Path, with_table: bool) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _stored(store, 500, with_table=with_table)
    in_memory = segments.load(store, REF, seg)
    cache = SegmentCache(store, tmp_path / "cache")

    opened = segments.open_cached(cache, REF, seg)

    assert isinstance(opened.ids, IdColumn) and opened.ids == in_memory.ids
    assert list(opened.metadata) == list(in_memory.metadata)
    assert all(opened.row_of(d) == in_memory.row_of(d) for d in in_memory.ids)
    np.testing.assert_array_equal(opened.id_order(), in_memory.id_order())
    table = cache.root / REF.segment_key("s1", segments.DOCS_TABLE_FILE)
    assert table.exists()
    restarted = SegmentCache(store, tmp_path / "cache")  # a new process: the table is neither fetched nor made again
    made = table.stat().st_mtime_ns
    again = segments.open_cached(restarted, REF, seg)
    assert restarted.downloads == 0 and table.stat().st_mtime_ns == made
    assert again.ids[17] == in_memory.ids[17] and again.metadata[17] == in_memory.metadata[17]


def test_a_table_made_locally_and_damaged_since_is_made_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    seg = _stored(store, 50, with_table=False)
    cache = SegmentCache(store, tmp_path / "cache")
    segments.open_cached(cache, REF, seg)
    table = cache.root / REF.segment_key("s1", segments.DOCS_TABLE_FILE)
    table.write_bytes(b"SFDOCS01" + b"\xff" * 8)  # a new stat: its record no longer matches

    opened = segments.open_cached(SegmentCache(store, tmp_path / "cache"), REF, seg)

    assert opened.ids == segments.load(store, REF, seg).ids
    assert DocTable.open(table).count == 50
