"""Rows as columns of bytes: what a merge copies from its sources' files into the new segment's, undecoded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.index import columns, doctable, texts
from shared.index.columns import Column, ColumnBuilder, Rows

IDS = ["b", "a\u00e9", 'c"q', "\u2603", "a"]
META: list[dict[str, Any]] = [{"n": 1}, {}, {"s": "Zo\u00eb"}, {"l": [1.5, None, True]}, {"n": 5}]
TEXTS = ["one", None, "", "caf\u00e9", "x" * 3000]


def test_a_column_holds_its_rows_in_one_buffer_and_gives_them_back_in_order() -> None:
    column = Column.of([b"ab", b"", b"cde"])
    assert len(column) == 3 and list(column) == [b"ab", b"", b"cde"] and column[2] == b"cde"
    assert column.nbytes() == 5 and column.lengths().tolist() == [2, 0, 3]
    assert b"".join(column.pieces(sep=b",")) == b"ab,,cde"
    assert b"".join(column.pieces([2, 0], sep=b"|")) == b"cde|ab"
    assert list(Column.empty(2)) == [b"", b""]


def test_pieces_of_a_large_column_join_to_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "PIECE_BYTES", 10)
    rows = [f"row {i}".encode() for i in range(100)]
    pieces = list(Column.of(rows).pieces(sep=b"\n"))
    assert len(pieces) > 10 and b"".join(pieces) == b"\n".join(rows)


def test_a_builder_gathers_rows_of_other_columns_in_the_order_asked() -> None:
    first, second = Column.of([b"a", b"bb", b"ccc"]), Column.of([b"dddd", b"e"])
    builder = ColumnBuilder()
    builder.take(first, [2, 0])
    builder.take(second, [1])
    builder.append(b"f")
    assert list(builder.build()) == [b"ccc", b"a", b"e", b"f"]


def test_rows_made_of_lists_read_back_and_reorder() -> None:
    rows = Rows.of(IDS, META, TEXTS)
    assert len(rows) == 5 and rows.id(1) == IDS[1] and rows.id_list(1, 3) == IDS[1:3] and rows.id_list(4, 99) == ["a"]
    assert [json.loads(m) for m in rows.metadata] == META
    assert texts.decode(b"".join(texts.pieces(rows.texts))) == TEXTS  # type: ignore[arg-type]
    taken = rows.taken([4, 0])
    assert taken.id_list() == ["a", "b"] and [json.loads(m) for m in taken.metadata] == [META[4], META[0]]
    with pytest.raises(ValueError, match="differ in length"):
        Rows.of(IDS, META[:2])


def test_a_document_table_gives_its_ids_and_metadata_as_columns_read_in_place() -> None:
    table = doctable.DocTable(doctable.encode(IDS, META))
    assert [i.decode() for i in table.id_column()] == IDS
    assert [json.loads(m) for m in table.metadata_column()] == META
    # A table written from those columns is the same table.
    again = b"".join(doctable.pieces(table.id_column(), table.metadata_column()))
    assert again == doctable.encode(IDS, META)


def test_a_texts_file_gives_its_entries_undecoded_and_they_write_the_same_file() -> None:
    data = texts.encode(TEXTS)
    entries = texts.entries(data)
    assert list(entries) == [columns.text_entry(t) for t in TEXTS]
    assert b"".join(texts.pieces(entries)) == data
