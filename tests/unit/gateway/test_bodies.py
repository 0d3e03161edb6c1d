"""JSON nesting depth, counted without parsing: brackets in strings are text."""

from __future__ import annotations

import pytest

from services.gateway.http.bodies import json_depth


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
