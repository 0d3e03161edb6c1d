"""Request bodies: read within a deadline (slow clients), nesting-checked before parsing, validated by pydantic."""

from __future__ import annotations

import asyncio
import json
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
        web.HTTPBadRequest: it is not JSON, or nests deeper than allowed.
    """
    raw = await read_bytes(request)
    if not raw:
        return None
    limit = request.app[SETTINGS].max_json_depth
    if json_depth(raw) > limit:
        raise web.HTTPBadRequest(text=f"The request body nests arrays and objects deeper than {limit} levels.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise web.HTTPBadRequest(text=f"The request body is not valid JSON: {exc}") from exc


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON object body; 400 for bad JSON, 422 (raised as ValidationError) for bad fields."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="The request body must be a JSON object.")
    return model.model_validate(data)
