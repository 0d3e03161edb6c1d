"""JSON nesting depth, counted without parsing: brackets in strings are text."""

from __future__ import annotations

import re

import pytest

from services.gateway.http.bodies import json_depth
from services.gateway.schemas import NOT_BLANK_PATTERN


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b"42", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),
        (b'["\\"[[[", ["\\\\"]]', 2),
        (b"[" * 40 + b"]" * 40, 40),
        (b"[[[", 3),  # not JSON, but as deep as it gets
    ],
)
def test_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


def test_the_not_blank_pattern_of_the_schema_is_what_the_check_accepts() -> None:
    pattern = re.compile(NOT_BLANK_PATTERN)
    for point in range(0x3100):  # every whitespace character lies below U+3100
        char = chr(point)
        assert (pattern.search(char) is None) == (not char.strip()), hex(point)
