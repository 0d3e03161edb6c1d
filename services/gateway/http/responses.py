"""JSON responses built from pydantic models."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """A pydantic model as a JSON response."""
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json")


def json_bytes_response(body: bytes, status: int = 200) -> web.Response:
    """Already serialised JSON as a response."""
    return web.Response(status=status, body=body, content_type="application/json")
