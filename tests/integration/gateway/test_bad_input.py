"""Every malformed request gets its 4xx problem document, never a 500."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.integration.gateway.conftest import Api

VECTOR = [0.1] * 384


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(await resp.text())
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


@pytest.fixture
async def coll(api: Api) -> str:
    resp = await api.client.put("/v1/collections/docs", headers=api.auth)
    assert resp.status == 201
    return "/v1/collections/docs"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}])
async def test_missing_or_wrong_key_is_401(api: Api, headers: dict[str, str]) -> None:
    resp = await api.client.get("/v1/collections", headers=headers)
    body = await _problem(resp, 401)
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert "api key" in body["detail"].lower()


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_malformed_json_is_400(api: Api, coll: str, raw: bytes) -> None:
    for path in (f"{coll}/documents", f"{coll}/search"):
        await _problem(await api.client.post(path, data=raw, headers=api.auth), 400)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/collections/nope", "GET"),
        ("/v1/collections/nope", "DELETE"),
        ("/v1/collections/nope/documents", "POST"),
        ("/v1/collections/nope/documents/x", "DELETE"),
        ("/v1/collections/nope/search", "POST"),
        ("/v1/jobs/job_nope", "GET"),
        ("/v1/nothing-here", "GET"),
    ],
)
async def test_unknown_resources_are_404(api: Api, path: str, method: str) -> None:
    body = {"documents": [{"id": "a", "text": "x"}]} if path.endswith("documents") else {"query": "x"}
    await _problem(await api.client.request(method, path, json=body, headers=api.auth), 404)


async def test_body_over_the_size_limit_is_413(api: Api, coll: str) -> None:
    big = json.dumps({"documents": [{"id": "a", "text": "x" * (11 * 1024 * 1024)}]}).encode()
    resp = await api.client.post(f"{coll}/documents", data=io.BytesIO(big), headers=api.auth)
    body = await _problem(resp, 413)
    assert "10485760" in body["detail"]


async def test_too_many_documents_is_413(api: Api, coll: str) -> None:
    docs = [{"id": str(i), "text": "x"} for i in range(1001)]
    body = await _problem(await api.client.post(f"{coll}/documents", json={"documents": docs}, headers=api.auth), 413)
    assert "1000" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({}, "/documents"),
        ({"documents": []}, "/documents"),
        ({"documents": [{"id": "a"}]}, "/documents"),
        ({"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "/documents"),
        ({"documents": [{"id": "", "text": "x"}]}, "/documents/0/id"),
        ({"documents": [{"id": "a", "text": 5}]}, "/documents/0/text"),
        ({"documents": [{"id": "a", "vector": [1.0, 2.0]}]}, "/documents/0/vector"),
        ({"documents": [{"id": "a", "text": "x", "metadata": []}]}, "/documents/0/metadata"),
        ({"documents": [{"id": "a", "text": "x", "colour": "red"}]}, "/documents/0/colour"),
    ],
)
async def test_invalid_documents_are_422_with_field_pointers(api: Api, coll: str, payload: Any, pointer: str) -> None:
    body = await _problem(await api.client.post(f"{coll}/documents", json=payload, headers=api.auth), 422)
    assert any(e["pointer"] == pointer for e in body["errors"]), body["errors"]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"k": 5}, ""),
        ({"query": "x", "vector": VECTOR}, ""),
        ({"query": "x", "k": 0}, "/k"),
        ({"query": "x", "k": 101}, "/k"),
        ({"query": ""}, "/query"),
        ({"vector": [1.0] * 383}, "/vector"),
        ({"vector": [0.0] * 384}, "/vector"),
        ({"query": "x", "filter": {"a": {"nested": 1}}}, "/filter/a"),
    ],
)
async def test_invalid_searches_are_422(api: Api, coll: str, payload: Any, pointer: str) -> None:
    body = await _problem(await api.client.post(f"{coll}/search", json=payload, headers=api.auth), 422)
    assert any(e["pointer"].startswith(pointer) for e in body["errors"]), body["errors"]


async def test_invalid_collection_name_is_422(api: Api) -> None:
    body = await _problem(await api.client.put("/v1/collections/-bad%20name", headers=api.auth), 422)
    assert body["errors"][0]["pointer"] == "/path/name"


async def test_wrong_method_is_405(api: Api, coll: str) -> None:
    await _problem(await api.client.patch(coll, headers=api.auth), 405)
