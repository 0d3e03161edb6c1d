"""Request bodies: read within a deadline (slow clients), nesting-checked before parsing, validated by pydantic."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Final, TypeVar

from aiohttp import web
from pydantic import BaseModel

from services.gateway.appkeys import SETTINGS

M = TypeVar("M", bound=BaseModel)

# A JSON string (escapes included) or one bracket: strings are skipped whole, in C, so a body is
# scanned in as many steps as it has strings and brackets, however long its texts are.
_TOKENS: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPEN: Final = frozenset(b"[{")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (which need not be valid JSON)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        first = raw[match.start()]
        if first in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif first != 0x22:  # a closing bracket (strings start with '"')
            depth -= 1
    return deepest


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


def parse_json(raw: bytes) -> object:
    """``raw`` parsed as strict JSON (UTF-8, -16 or -32, as :func:`json.loads` detects them).

    Raises:
        ValueError: it is not JSON, or not JSON the API takes (the message says why).
    """
    text = raw.decode(json.detect_encoding(raw))  # strict: encoded surrogates are refused here
    data = json.loads(text, parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float)
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(data)
        if where is not None:
            raise _Refused(f"{where} holds a lone surrogate, which UTF-8 cannot encode")
    return data


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
    """The body parsed as JSON (None when empty).

    Raises:
        web.HTTPBadRequest: it is not strict JSON (see :func:`parse_json`), or nests deeper than allowed.
    """
    raw = await read_bytes(request)
    if not raw:
        return None
    limit = request.app[SETTINGS].max_json_depth
    if json_depth(raw) > limit:
        raise web.HTTPBadRequest(text=f"The request body nests arrays and objects deeper than {limit} levels.")
    try:
        return parse_json(raw)
    except _Refused as exc:
        raise web.HTTPBadRequest(text=f"The request body is JSON the API does not accept: {exc}.") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise web.HTTPBadRequest(text=f"The request body is not valid JSON: {exc}") from exc


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON object body; 400 for bad JSON, 422 (raised as ValidationError) for bad fields."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="The request body must be a JSON object.")
    return model.model_validate(data)
