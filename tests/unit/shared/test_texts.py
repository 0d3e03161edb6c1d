"""The texts file: every row's text, each read alone by offset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import CorruptObject
from shared.index import texts

ROWS = ["first", None, "", "caf\u00e9 \u2603 \U0001f600", "x" * 10_000, None]


def test_texts_round_trip_with_missing_and_empty_ones_kept_apart() -> None:
    assert texts.decode(texts.encode(ROWS)) == ROWS
    assert texts.decode(texts.encode([])) == []


def test_each_row_is_read_by_offset_from_the_open_file(tmp_path: Path) -> None:
    path = tmp_path / "t.texts"
    path.write_bytes(texts.encode(ROWS))
    opened = texts.TextFile(path)
    assert opened.count == len(ROWS)
    assert [opened.read(r) for r in reversed(range(len(ROWS)))] == list(reversed(ROWS))
    with pytest.raises(IndexError):
        opened.read(len(ROWS))
    with pytest.raises(IndexError):
        opened.read(-1)


def test_an_open_file_is_still_read_after_it_is_unlinked(tmp_path: Path) -> None:
    path = tmp_path / "t.texts"
    path.write_bytes(texts.encode(ROWS))
    opened = texts.TextFile(path)
    os.unlink(path)
    assert opened.read(3) == ROWS[3]
    opened.close()
    opened.close()  # idempotent


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"NOTTEXTS" + b[8:],  # another magic
        lambda b: b[:-1],  # truncated data
        lambda b: b[:20],  # truncated offsets
        lambda b: b + b"x",  # trailing bytes
    ],
)
def test_a_malformed_file_is_refused(tmp_path: Path, damage: object) -> None:
    bad = damage(texts.encode(ROWS))  # type: ignore[operator]
    with pytest.raises(CorruptObject):
        texts.decode(bad)
    with pytest.raises(CorruptObject):
        texts.entries(bad)
    path = tmp_path / "bad.texts"
    path.write_bytes(bad)
    with pytest.raises(CorruptObject):
        texts.TextFile(path)


def test_an_entry_with_an_unknown_tag_is_refused(tmp_path: Path) -> None:
    data = bytearray(texts.encode(["a"]))
    data[-2] = 0x02  # the entry's tag
    with pytest.raises(CorruptObject, match="tag"):
        texts.decode(bytes(data))
    path = tmp_path / "t.texts"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match="tag"):
        texts.TextFile(path).read(0)
