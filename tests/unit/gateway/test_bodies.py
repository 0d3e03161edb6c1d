"""JSON nesting depth, counted without parsing: brackets in strings are text."""

from __future__ import annotations

import json
import re

import pytest

from services.gateway.http.bodies import json_depth, parse_json
from shared.api.schemas import NOT_BLANK_PATTERN


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b"42", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),
        (b'["\\"[[[", ["\\\\"]]', 2),
        (b'{"path": "C:\\\\dir\\\\[[", "b": [[]]}', 3),  # backslashes, no escaped quote: strings split at quotes
        (b"[" * 40 + b"]" * 40, 40),
        (b"[[[", 3),  # not JSON, but as deep as it gets
        (b'[["unterminated [[[', 2),  # an unterminated string runs to the end
        (b'[["ends in a backslash \\', 2),
        (b'["' + b"A" * 100_000 + b'", []]', 2),
    ],
)
def test_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


def test_depth_scans_a_body_of_escaped_quotes_once() -> None:
    # Every quote here starts a string that runs to the end: a scan that retried from each quote
    # would take hours over these 400 kB (and block whatever thread runs it).
    assert json_depth(b'"' + b'\\"' * 200_000 + b"[[") == 0


def test_the_not_blank_pattern_of_the_schema_is_what_the_check_accepts() -> None:
    pattern = re.compile(NOT_BLANK_PATTERN)
    for point in range(0x3100):  # every whitespace character lies below U+3100
        char = chr(point)
        assert (pattern.search(char) is None) == (not char.strip()), hex(point)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, -0, 0.5, 1e-400, 1.7976931348623157e308, true, null, "x"]}',
        b'{"n": 18446744073709551616, "m": -9223372036854775809}',  # past 64 bits: kept exact
        b'{"n": 1234567890123456789012345678901234567890}',
        b"[0.12345678901234567890123, 12345678901234567890.5, 1e19]",
        b'{"id": "12345678901234567890123"}',
        b'{"a": 1, "a": 2}',
        b'\xef\xbb\xbf{"bom": true}',
        '{"utf16": "é"}'.encode("utf-16"),
        b'{"emoji \\ud83d\\ude00": "\\\\ud800 is text"}',
    ],
)
def test_parse_json_reads_what_the_standard_library_reads(raw: bytes) -> None:
    expected = json.loads(raw)
    parsed = parse_json(raw)
    assert parsed == expected
    assert repr(parsed) == repr(expected)  # same types too: an integer stays an integer


@pytest.mark.parametrize(
    "raw",
    [b"[NaN]", b"[1e400]", b'["\\ud800"]', b'"\xed\xa0\x80"', b"[" + b"9" * 4301 + b"]", b"[1,]", b"\x0c1"],
)
def test_parse_json_refuses_what_the_api_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(raw)
