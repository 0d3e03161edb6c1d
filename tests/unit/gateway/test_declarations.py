"""Route declarations, roles, and the rate-limit headers' structured-field form."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.gateway.http.declarations import Endpoints, Scope
from services.gateway.http.ratelimit import Decision, WindowState
from shared.records.apikeys import Role
from shared.records.ratelimits import Category


async def _handler(request: web.Request) -> web.Response:
    """Do nothing."""
    return web.Response()


def test_roles_include_the_lesser_ones() -> None:
    assert Role.ADMIN.allows(Role.WRITER) and Role.ADMIN.allows(Role.READER)
    assert Role.WRITER.allows(Role.READER) and not Role.WRITER.allows(Role.ADMIN)
    assert not Role.READER.allows(Role.WRITER)


def test_a_declaration_must_be_consistent() -> None:
    table = Endpoints("t")
    with pytest.raises(ValueError, match="public"):
        table.get("/x", role=None, limit=None, responses={200: None})
    with pytest.raises(ValueError, match="public"):
        table.get("/x", role=Role.READER, limit=None, scope=Scope.PUBLIC, responses={200: None})
    with pytest.raises(ValueError, match="admin"):
        table.get("/x", role=Role.WRITER, limit=Category.SINGLE, scope=Scope.CLUSTER, responses={200: None})
    table.get("/v1/things/{thing_id}", role=Role.READER, limit=Category.SINGLE, responses={200: None})(_handler)
    (endpoint,) = list(table)
    assert endpoint.path_params == ["thing_id"] and endpoint.summary == "Do nothing."


def test_headers_use_the_drafts_structured_fields() -> None:
    windows = (
        WindowState("single-minute", 30, 60, 0, 12),
        WindowState("hour", 100, 3600, 42, 1800),
    )
    refused = Decision(admitted=False, windows=windows)
    assert refused.headers() == {
        "RateLimit-Policy": '"single-minute";q=30;w=60, "hour";q=100;w=3600',
        "RateLimit": '"single-minute";r=0;t=12, "hour";r=42;t=1800',
        "Retry-After": "12",
    }
    assert "Retry-After" not in Decision(admitted=True, windows=windows).headers()
    assert Decision(admitted=True, windows=()).headers() == {}
