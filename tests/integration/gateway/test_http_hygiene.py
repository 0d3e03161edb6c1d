"""What every answer carries and what abusive input gets: request ids, security headers, CORS, limits, docs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from services.gateway.main import build as build_gateway
from services.gateway.main import server_options
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from tests.integration.gateway.conftest import Api, Client

Build = Callable[..., Coroutine[Any, Any, Client]]


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder) -> Build:
    async def create(**overrides: Any) -> Client:
        app = build_gateway(settings.model_copy(update=overrides), store=store, encoder_loader=lambda: encoder)
        return await aiohttp_client(app)

    return create


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/collections", 200),
        ("GET", "/v1/nope", 404),
        ("GET", "/healthz", 200),
        ("PATCH", "/v1/collections", 405),
    ],
)
async def test_every_answer_has_an_id_and_the_security_headers(api: Api, method: str, path: str, status: int) -> None:
    resp = await api.client.request(method, path, headers=api.auth)
    assert resp.status == status
    assert len(resp.headers["X-Request-ID"]) == 32
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in resp.headers  # plain HTTP, no trusted proxy
    assert "Access-Control-Allow-Origin" not in resp.headers  # CORS is off by default


async def test_a_valid_request_id_is_echoed_and_an_invalid_one_replaced(api: Api) -> None:
    mine = "checkout-7f3a:retry/2"
    resp = await api.client.get("/v1/collections", headers={**api.auth, "X-Request-ID": mine})
    assert resp.headers["X-Request-ID"] == mine
    unauthorised = await api.client.get("/v1/collections", headers={"X-Request-ID": mine})
    assert unauthorised.status == 401 and unauthorised.headers["X-Request-ID"] == mine
    for bad in ("x" * 129, "has space", "semi;colon", ""):
        resp = await api.client.get("/v1/collections", headers={**api.auth, "X-Request-ID": bad})
        assert resp.headers["X-Request-ID"] != bad and len(resp.headers["X-Request-ID"]) == 32


async def test_hsts_only_over_tls_as_told_by_a_trusted_proxy(make_client: Build) -> None:
    trusting = await make_client(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    resp = await trusting.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    plain = await trusting.get("/healthz", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers
    untrusting = await make_client(trusted_proxies="10.0.0.1")
    spoofed = await untrusting.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in spoofed.headers


async def test_cors_answers_preflights_and_exposes_headers_to_allowed_origins_only(
    make_client: Build, api: Api
) -> None:
    client = await make_client(cors_origins="https://app.example, https://admin.example")
    preflight = await client.options(
        "/v1/collections/docs/search",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    actual = await client.get("/v1/collections", headers={**api.auth, "Origin": "https://app.example"})
    assert actual.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "RateLimit" in actual.headers["Access-Control-Expose-Headers"]
    assert "Origin" in actual.headers["Vary"]
    stranger = await client.options(
        "/v1/collections", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in stranger.headers
    other = await client.get("/v1/collections", headers={**api.auth, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_json_nested_deeper_than_the_limit_is_400_not_a_crash(api: Api) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    for depth in (33, 100_000):
        body = ("[" * depth + "]" * depth).encode()
        wrapped = b'{"query": "x", "filter": {"a": ' + body + b"}}"
        resp = await api.client.post("/v1/collections/docs/search", data=wrapped, headers=api.auth)
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/problem+json"
        assert "deeper than 32" in (await resp.json(content_type=None))["detail"]
    # Brackets inside strings are text, not nesting.
    doc = {"id": "a", "text": "[" * 1000 + "{" * 1000, "metadata": {"note": "]]]}}}"}}
    resp = await api.client.post("/v1/collections/docs/documents", json={"documents": [doc]}, headers=api.auth)
    assert resp.status == 202, await resp.text()


async def test_a_body_that_does_not_arrive_in_time_is_408(
    aiohttp_server: AiohttpServer, settings: Settings, store: LocalStore, encoder: Encoder, api: Api
) -> None:
    app = build_gateway(settings.model_copy(update={"request_read_timeout_s": 0.5}), store=store)
    server: TestServer = await aiohttp_server(app)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        "POST /v1/collections/docs/search HTTP/1.1\r\n"
        f"Host: {server.host}\r\nAuthorization: Bearer {api.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    writer.write(head.encode() + b'{"query": ')  # ... and nothing more
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 408 " in status_line, status_line
    writer.close()


async def test_a_request_head_that_never_ends_is_cut_off(settings: Settings, store: LocalStore) -> None:
    tight = settings.model_copy(update={"idle_timeout_s": 0.5})
    server = TestServer(build_gateway(tight, store=store), port=0)
    await server.start_server(**server_options(tight))
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a request head that never ends
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()
    finally:
        await server.close()


async def test_openapi_describes_every_declared_route(api: Api) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (sf_…).",
    }
    search = spec["paths"]["/v1/collections/{name}/search"]["post"]
    assert search["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchRequest"
    }
    assert search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchResponse")
    assert search["responses"]["429"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    routed = {
        (r.method, r.resource.canonical)
        for r in api.client.app.router.routes()
        if r.resource is not None and r.method != "HEAD" and r.resource.canonical.startswith("/v1/")
    }
    assert routed <= documented
    assert "/docs" not in spec["paths"]
    json.dumps(spec)


async def test_docs_page_is_served_without_any_cdn(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "http://" not in html and "https://" not in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/docs/static/init.js"):
        assert asset in html
        resp = await api.client.get(asset)
        assert resp.status == 200 and len(await resp.read()) > 20, asset
    assert (await api.client.get("/docs/static/../../etc/passwd")).status == 404
    assert (await api.client.get("/docs/static/index.html")).status == 404
