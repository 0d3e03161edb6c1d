"""Vectors sent as base64 float32 bytes (``vector_b64``), and large bodies decoded off the event loop."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import redis

from services.gateway.http.bodies import OFF_LOOP_BYTES
from shared.index.documents import Document, decode_batch, given_vectors
from shared.index.storage import LocalStore
from shared.records import catalog
from tests.integration.gateway.conftest import Api

DIM = 384


def _b64(vector: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def _vectors(n: int, seed: int = 7) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(await resp.text())
    assert body["status"] == status
    return body


@pytest.fixture
async def coll(api: Api) -> str:
    resp = await api.client.put("/v1/collections/docs", headers=api.auth)
    assert resp.status == 201
    return "/v1/collections/docs"


def _stored(store: LocalStore, redis_client: redis.Redis, batch_id: str) -> list[Document]:
    """The stored batch's documents, each with the vector it came with (as stored: float32)."""
    record = catalog.get(redis_client, "acme", "docs")
    assert record is not None
    batch = decode_batch(store.get(record.ref.batch_key(batch_id)))
    sent = store.get(record.ref.batch_vectors_key(batch_id)) if batch.vector_rows else None
    given, vectors = given_vectors(batch, sent)
    docs = list(batch.documents)
    for i, row in zip(given, vectors, strict=True):
        docs[i] = docs[i].model_copy(update={"vector": row.tolist()})
    return docs


async def _ingest(api: Api, coll: str, documents: list[dict[str, Any]]) -> str:
    raw = json.dumps({"documents": documents}).encode()
    resp = await api.client.post(f"{coll}/documents", data=raw, headers=api.auth)
    assert resp.status == 202, await resp.text()
    batch_id: str = (await resp.json())["batch_id"]
    return batch_id


@pytest.mark.parametrize("n", [1, 60])  # one on the event loop, one large enough for the worker thread
async def test_a_base64_vector_is_stored_as_the_same_vector_as_a_json_one(
    api: Api, coll: str, store: LocalStore, redis_client: redis.Redis, n: int
) -> None:
    vectors = _vectors(n)
    as_b64 = [{"id": f"d{i}", "vector_b64": _b64(v), "metadata": {"i": i}} for i, v in enumerate(vectors)]
    as_json = [{"id": f"d{i}", "vector": v.tolist(), "metadata": {"i": i}} for i, v in enumerate(vectors)]
    assert (len(json.dumps({"documents": as_b64})) >= OFF_LOOP_BYTES) == (n > 1)

    from_b64 = _stored(store, redis_client, await _ingest(api, coll, as_b64))
    from_json = _stored(store, redis_client, await _ingest(api, coll, as_json))

    assert from_b64 == from_json
    assert np.array_equal(np.asarray([d.vector for d in from_b64], dtype=np.float32), vectors)


@pytest.mark.parametrize(
    ("vector_b64", "detail"),
    [
        ("not base64!", "must be base64"),
        (_b64(np.ones(DIM))[:-4], "got 1533 bytes"),  # 383 floats and a bit
        (_b64(np.ones(DIM + 1)), "must encode 384 float32 values"),
        (_b64(np.ones(DIM))[:-4] + "AB=C", "must be base64"),  # padding inside
        (_b64(np.full(DIM, np.nan)), "finite"),
        (_b64(np.full(DIM, np.inf)), "finite"),
        (_b64(np.zeros(DIM)), "all zeros"),
        ([0.5] * DIM, "base64 string"),
    ],
)
async def test_an_invalid_base64_vector_is_a_422_naming_it(api: Api, coll: str, vector_b64: Any, detail: str) -> None:
    documents = [{"id": "ok", "vector_b64": _b64(np.ones(DIM))}, {"id": "bad", "vector_b64": vector_b64}]
    resp = await api.client.post(f"{coll}/documents", json={"documents": documents}, headers=api.auth)
    body = await _problem(resp, 422)
    assert [e["pointer"] for e in body["errors"]] == ["/documents/1/vector_b64"]
    assert detail in body["errors"][0]["detail"]


async def test_vector_and_vector_b64_together_are_a_422(api: Api, coll: str) -> None:
    vector = np.ones(DIM)
    documents = [{"id": "both", "vector": vector.tolist(), "vector_b64": _b64(vector)}]
    resp = await api.client.post(f"{coll}/documents", json={"documents": documents}, headers=api.auth)
    body = await _problem(resp, 422)
    assert [e["pointer"] for e in body["errors"]] == ["/documents/0"]
    assert "not both" in body["errors"][0]["detail"]


def _large(bad: str) -> bytes:
    """An ingest body past OFF_LOOP_BYTES (decoded in the worker thread) with ``bad`` in its last document."""
    filler = ",".join(f'{{"id": "f{i}", "text": "{"x" * 100}"}}' for i in range(OFF_LOOP_BYTES // 100))
    raw = f'{{"documents": [{filler}, {{"id": "a", "text": "x", "metadata": {bad}}}]}}'.encode()
    assert len(raw) > OFF_LOOP_BYTES
    return raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_large('{"n": ' + "9" * 4301 + "}"), "4300 digits"),
        (_large('{"n": NaN}'), "NaN"),
        (_large('{"n": -Infinity}'), "-Infinity"),
        (_large('{"n": 1e400}'), "too large"),
        (_large('{"k": "ok \\uDC00"}'), "/documents/"),
        (_large("[" * 40 + "]" * 40), "deeper than 32 levels"),
        (_large('{"n": 1'), "not valid JSON"),
        (b"\xff\xfe" + b" " * OFF_LOOP_BYTES, "not valid JSON"),
    ],
)
async def test_a_large_body_is_as_strict_as_a_small_one(api: Api, coll: str, raw: bytes, why: str) -> None:
    body = await _problem(await api.client.post(f"{coll}/documents", data=raw, headers=api.auth), 400)
    assert why in body["detail"]


async def test_a_large_body_keeps_integers_beyond_64_bits_exact(
    api: Api, coll: str, store: LocalStore, redis_client: redis.Redis
) -> None:
    big = 2**64 + 1
    resp = await api.client.post(f"{coll}/documents", data=_large(f'{{"n": {big}, "m": -{big}}}'), headers=api.auth)
    assert resp.status == 202, await resp.text()
    stored = _stored(store, redis_client, (await resp.json())["batch_id"])
    assert stored[-1].metadata == {"n": big, "m": -big}


async def test_a_large_body_with_invalid_fields_is_a_422(api: Api, coll: str) -> None:
    resp = await api.client.post(f"{coll}/documents", data=_large('"not an object"'), headers=api.auth)
    body = await _problem(resp, 422)
    assert [e["pointer"] for e in body["errors"]] == [f"/documents/{OFF_LOOP_BYTES // 100}/metadata"]


async def test_the_openapi_document_describes_vector_b64(api: Api) -> None:
    spec = await (await api.client.get("/openapi.json")).json()
    document = spec["components"]["schemas"]["IngestDocument"]
    field = document["properties"]["vector_b64"]
    string = next(option for option in field["anyOf"] if option.get("type") == "string")
    assert string["contentEncoding"] == "base64"
    assert string["minLength"] == string["maxLength"] == len(_b64(np.ones(DIM)))
    assert "little-endian float32" in field["description"]
    assert {"required": ["vector_b64"], "not": {"properties": {"vector_b64": {"type": "null"}}}} in document["anyOf"]
