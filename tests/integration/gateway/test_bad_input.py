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


def _ingest(metadata: str, text: str = '"x"') -> bytes:
    return f'{{"documents": [{{"id": "a", "text": {text}, "metadata": {metadata}}}]}}'.encode()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_ingest('{"n": ' + "9" * 4301 + "}"), "4300 digits"),
        (_ingest('{"n": -' + "1" * 5000 + "}"), "4300 digits"),
        (_ingest('{"n": NaN}'), "NaN"),
        (_ingest('{"n": Infinity}'), "Infinity"),
        (_ingest('{"n": [-Infinity]}'), "-Infinity"),
        (_ingest('{"n": 1e400}'), "too large"),
        (_ingest('{"\\ud800": 1}'), "lone surrogate"),
        (_ingest('{"k": "ok \\uDC00"}'), "/documents/0/metadata/k"),
        (_ingest("{}", text='"\\ud83d"'), "/documents/0/text"),
    ],
)
async def test_json_the_api_cannot_hold_is_400(api: Api, coll: str, raw: bytes, why: str) -> None:
    body = await _problem(await api.client.post(f"{coll}/documents", data=raw, headers=api.auth), 400)
    assert why in body["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"query": "x", "k": ' + b"1" * 4301 + b"}",
        b'{"query": "x", "filter": {"a": NaN}}',
        b'{"query": "\\udfff"}',
        b'{"query": "\xed\xa0\x80"}',  # a surrogate encoded in the bytes themselves: not UTF-8
    ],
)
async def test_search_bodies_are_strict_json_too(api: Api, coll: str, raw: bytes) -> None:
    await _problem(await api.client.post(f"{coll}/search", data=raw, headers=api.auth), 400)


async def test_escaped_backslashes_and_surrogate_pairs_are_fine(api: Api, coll: str) -> None:
    raw = _ingest('{"emoji \\ud83d\\ude00": "\\\\ud800 is text"}')
    resp = await api.client.post(f"{coll}/documents", data=raw, headers=api.auth)
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize("text", ["", " ", "\n\t", "\u3000"])
async def test_blank_document_text_is_422(api: Api, coll: str, text: str) -> None:
    payload = {"documents": [{"id": "a", "text": "fine"}, {"id": "b", "text": text}]}
    body = await _problem(await api.client.post(f"{coll}/documents", json=payload, headers=api.auth), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/documents/1/text"]
    assert "whitespace" in body["errors"][0]["detail"]


@pytest.mark.parametrize("query", ["", "   ", "\n"])
async def test_blank_search_query_is_422(api: Api, coll: str, query: str) -> None:
    body = await _problem(await api.client.post(f"{coll}/search", json={"query": query}, headers=api.auth), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/query"]


async def test_the_server_header_names_no_version(api: Api, coll: str) -> None:
    for resp in (
        await api.client.get("/healthz"),
        await api.client.get("/v1/collections", headers=api.auth),
        await api.client.get("/v1/nothing-here", headers=api.auth),
        await api.client.post(f"{coll}/search", data=b"{", headers=api.auth),
    ):
        assert resp.headers["Server"] == "semaflow", resp.headers
