"""Request bodies: read within a deadline (slow clients), nesting-checked before parsing, validated by pydantic.

A large body is decoded (depth check, strict parse, validation) in the gateway's body thread, so the event loop
goes on answering other requests meanwhile; a small one is decoded on the loop, where that is cheaper
than the hand-off.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Final, TypeVar

import numpy as np
import orjson
from aiohttp import web
from pydantic import BaseModel

from services.gateway.appkeys import BODY_POOL, SETTINGS

M = TypeVar("M", bound=BaseModel)

# Bodies at least this large are decoded in a worker thread. Handing one over costs the loop about 70 µs;
# decoding 64 KiB of JSON vectors costs it about 1 ms (bench/ingest_loop.py --threshold). Smaller bodies
# take well under a millisecond, about what the worker thread would hold the GIL for anyway.
OFF_LOOP_BYTES: Final = 64 * 1024

# A JSON string, escapes included: stripped whole, in C, before the brackets left are counted. Runs of
# plain characters are taken at once (a 2,048-character base64 string is one step, not 2,048), and an
# unterminated string runs to the end of the body: every match attempt succeeds, so the scan is linear
# even in a body of escaped quotes (which would otherwise be rescanned from each quote).
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_A_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (which need not be valid JSON).

    Without an escaped quote (``\\"``) every quote opens or closes a string, so splitting at the quotes
    leaves the text outside strings in the even parts, in C at memory speed: a body of base64 vectors
    (long strings) takes 1 ms where the string pattern takes 9. Otherwise the pattern strips the strings.
    """
    outside = _STRING.sub(b"", raw) if b'\\"' in raw else b"".join(raw.split(b'"')[0::2])
    brackets = outside.translate(None, _NOT_A_BRACKET)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return max(0, int(np.cumsum(steps).max()))


# Strict JSON: no NaN or Infinity, no number that is not a finite double or an integer of sane
# length, no string that UTF-8 cannot encode (a lone surrogate, escaped or not).
MAX_INT_DIGITS: Final = 4300  # Python's own limit on int(str), here a clear 400 rather than its ValueError
# Where a string may hold a lone surrogate: only a \uD800-\uDFFF escape makes one (encoded bytes are refused).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """Valid JSON syntax whose value the API does not take."""


def _refuse_constant(name: str) -> object:
    raise _Refused(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is too large for a double")
    return value


def _lone_surrogate(value: object, pointer: str = "") -> str | None:
    """Where in ``value`` a string or object key holds a lone surrogate (None when none does)."""
    if isinstance(value, str):
        return f"the string at {pointer or '/'}" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"a key of the object at {pointer or '/'}"
            here = pointer + "/" + key.replace("~", "~0").replace("/", "~1")
            found = _lone_surrogate(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{pointer}/{i}")
            if found is not None:
                return found
    return None


# An integer literal of 19 digits or more: orjson holds only 64-bit integers and reads a longer one as a
# float, so such a body is parsed by the standard library, which keeps it exact. Digits become "1", the
# characters a fraction or an exponent follows become ".", everything else " ": a run of 19 ones after
# a space is an integer's (or a string's) run of digits, never a fraction's or an exponent's.
_DIGIT_RUNS: Final = bytes(0x31 if chr(b).isdigit() and b < 0x80 else 0x2E if b in b".eE" else 0x20 for b in range(256))
_LONG_INTEGER: Final = b" " + b"1" * 19


def _strict_loads(raw: bytes) -> object:
    """``raw`` parsed by the standard library, with every strictness rule and a message that says why not."""
    text = raw.decode(json.detect_encoding(raw))  # strict: encoded surrogates are refused here
    data = json.loads(text, parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float)
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(data)
        if where is not None:
            raise _Refused(f"{where} holds a lone surrogate, which UTF-8 cannot encode")
    return data


def parse_json(raw: bytes) -> object:
    """``raw`` parsed as strict JSON (UTF-8, -16 or -32, as :func:`json.loads` detects them).

    orjson parses it when it can: it refuses NaN, Infinity, numbers too large for a double, lone
    surrogates and any encoding but UTF-8, as the API does. Whatever orjson refuses (or would read
    as a float: an integer beyond 64 bits) goes to the standard library, which accepts what the API
    takes and names the reason for what it does not.

    Raises:
        ValueError: it is not JSON, or not JSON the API takes (the message says why).
    """
    if _LONG_INTEGER not in b" " + raw.translate(_DIGIT_RUNS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _strict_loads(raw)


def decode_json(raw: bytes, max_depth: int) -> object:
    """``raw`` checked for nesting, then parsed as strict JSON (None when empty).

    Raises:
        web.HTTPBadRequest: it is not strict JSON (see :func:`parse_json`), or nests deeper than ``max_depth``.
    """
    if not raw:
        return None
    if json_depth(raw) > max_depth:
        raise web.HTTPBadRequest(text=f"The request body nests arrays and objects deeper than {max_depth} levels.")
    try:
        return parse_json(raw)
    except _Refused as exc:
        raise web.HTTPBadRequest(text=f"The request body is JSON the API does not accept: {exc}.") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise web.HTTPBadRequest(text=f"The request body is not valid JSON: {exc}") from exc


def decode_body(raw: bytes, model: type[M], max_depth: int) -> M:
    """``raw`` as a JSON object validated by ``model``.

    Raises:
        web.HTTPBadRequest: it is not strict JSON, nests too deep, or is not an object.
        pydantic.ValidationError: its fields are invalid (a 422).
    """
    data = decode_json(raw, max_depth)
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="The request body must be a JSON object.")
    return model.model_validate(data)


async def read_bytes(request: web.Request) -> bytes:
    """The whole body, which must arrive within the read timeout.

    Raises:
        web.HTTPRequestTimeout: it did not.
    """
    timeout = request.app[SETTINGS].request_read_timeout_s
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError as exc:
        raise web.HTTPRequestTimeout(text=f"The request body did not arrive within {timeout:g} seconds.") from exc


async def read_json(request: web.Request) -> object:
    """The body parsed as JSON (None when empty); a large one off the event loop.

    Raises:
        web.HTTPBadRequest: it is not strict JSON (see :func:`parse_json`), or nests deeper than allowed.
    """
    raw = await read_bytes(request)
    limit = request.app[SETTINGS].max_json_depth
    if len(raw) >= OFF_LOOP_BYTES:
        return await asyncio.get_running_loop().run_in_executor(request.app.get(BODY_POOL), decode_json, raw, limit)
    return decode_json(raw, limit)


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON object body, a large one off the event loop.

    Raises:
        web.HTTPBadRequest: bad JSON (400).
        pydantic.ValidationError: bad fields (422).
    """
    raw = await read_bytes(request)
    limit = request.app[SETTINGS].max_json_depth
    if len(raw) >= OFF_LOOP_BYTES:
        pool = request.app.get(BODY_POOL)  # None (before the app's resources start): asyncio's default executor
        return await asyncio.get_running_loop().run_in_executor(pool, decode_body, raw, model, limit)
    return decode_body(raw, model, limit)
