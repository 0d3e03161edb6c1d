"""Gateway, embedder and indexer in-process on a real Redis broker: ingest, search, delete."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
from typing import Any

import numpy as np
import pytest
import redis

from shared.index.documents import Document, decode_batch, decode_vectors, given_vectors, normalize
from shared.index.storage import LocalStore
from shared.records import catalog
from tests.integration.gateway.conftest import Api

pytestmark = pytest.mark.usefixtures("workers")


async def _wait_job(api: Api, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        resp = await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth)
        assert resp.status == 200
        job: dict[str, Any] = await resp.json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def _search(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.client.post("/v1/collections/docs/search", json=body, headers=api.auth)
    assert resp.status == 200, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def test_ingested_documents_become_searchable(api: Api) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    docs = [
        {"id": "cat", "text": "The cat sits on the mat.", "metadata": {"kind": "pet"}},
        {"id": "money", "text": "Quarterly revenue grew by ten percent.", "metadata": {"kind": "finance"}},
        {"id": "vec", "vector": [1.0] + [0.0] * 383, "metadata": {"kind": "raw"}},
    ]
    resp = await api.client.post("/v1/collections/docs/documents", json={"documents": docs}, headers=api.auth)
    assert resp.status == 202
    accepted = await resp.json()
    job = await _wait_job(api, accepted["job_id"])
    assert job["state"] == "succeeded", job
    assert job["documents"] == 3 and job["collection"] == "docs"

    found = await _search(api, {"query": "a kitten resting on a rug", "k": 2})
    assert found["results"][0]["id"] == "cat"
    assert found["results"][0]["metadata"] == {"kind": "pet"}
    assert found["index_version"] == job["index_version"]

    by_vector = await _search(api, {"vector": [2.0] + [0.0] * 383, "k": 1})
    assert by_vector["results"][0]["id"] == "vec"
    assert by_vector["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    filtered = await _search(api, {"query": "a kitten", "k": 3, "filter": {"kind": "finance"}})
    assert [r["id"] for r in filtered["results"]] == ["money"]

    info = await (await api.client.get("/v1/collections/docs", headers=api.auth)).json()
    assert info["documents"] == 3 and info["segments"] == 1 and info["index_version"] == job["index_version"]


async def test_deleted_and_replaced_documents(api: Api) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    first = [{"id": "a", "text": "apples are red"}, {"id": "b", "text": "bananas are yellow"}]
    resp = await api.client.post("/v1/collections/docs/documents", json={"documents": first}, headers=api.auth)
    await _wait_job(api, (await resp.json())["job_id"])

    replace = [{"id": "a", "text": "the ocean is deep and blue"}]
    resp = await api.client.post("/v1/collections/docs/documents", json={"documents": replace}, headers=api.auth)
    await _wait_job(api, (await resp.json())["job_id"])
    hits = (await _search(api, {"query": "the ocean is deep and blue", "k": 5}))["results"]
    assert [h["id"] for h in hits].count("a") == 1 and hits[0]["id"] == "a"

    resp = await api.client.delete("/v1/collections/docs/documents/b", headers=api.auth)
    assert resp.status == 202
    job = await _wait_job(api, (await resp.json())["job_id"])
    assert job["state"] == "succeeded"
    hits = (await _search(api, {"query": "bananas are yellow", "k": 5}))["results"]
    assert [h["id"] for h in hits] == ["a"]


async def test_collection_delete_and_recreate_starts_empty(api: Api) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    resp = await api.client.post(
        "/v1/collections/docs/documents", json={"documents": [{"id": "a", "text": "x"}]}, headers=api.auth
    )
    await _wait_job(api, (await resp.json())["job_id"])
    assert (await api.client.delete("/v1/collections/docs", headers=api.auth)).status == 204
    assert (await api.client.get("/v1/collections/docs", headers=api.auth)).status == 404
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    out = await _search(api, {"query": "x", "k": 5})
    assert out == {"results": [], "index_version": None}


def _legacy_batch_bytes(documents: list[dict[str, Any]]) -> int:
    """Size of a batch file as written before given vectors were kept apart: vectors as JSON numbers."""
    lines = b"".join(Document.model_validate(d).model_dump_json(exclude_none=True).encode() + b"\n" for d in documents)
    return len(gzip.compress(lines, compresslevel=1, mtime=0))


@pytest.mark.parametrize("form", ["vector", "vector_b64"])
async def test_precomputed_vectors_are_stored_as_sent_and_indexed_normalised(
    api: Api, store: LocalStore, redis_client: redis.Redis, form: str
) -> None:
    # Given 200 documents with float32 vectors of no particular length, sent as JSON numbers or as base64
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    sent = np.random.default_rng(8).standard_normal((200, 384)).astype(np.float32) * 3
    as_json = [{"id": f"d{i}", "vector": v.tolist(), "metadata": {"i": i}} for i, v in enumerate(sent)]
    if form == "vector":
        docs = as_json
    else:
        docs = [
            {"id": f"d{i}", "vector_b64": base64.b64encode(v.astype("<f4").tobytes()).decode(), "metadata": {"i": i}}
            for i, v in enumerate(sent)
        ]

    # When they are ingested through the gateway, embedder and indexer
    body = io.BytesIO(json.dumps({"documents": docs}).encode())  # a large body: streamed, not held as bytes
    headers = {**api.auth, "Content-Type": "application/json"}
    resp = await api.client.post("/v1/collections/docs/documents", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    job = await _wait_job(api, accepted["job_id"])
    assert job["state"] == "succeeded", job

    # Then the batch holds the vectors bit for bit as sent, in binary, in well under half the old size
    record = catalog.get(redis_client, "acme", "docs")
    assert record is not None
    ref, batch_id = record.ref, accepted["batch_id"]
    batch = decode_batch(store.get(ref.batch_key(batch_id)))
    assert [d.metadata for d in batch.documents] == [{"i": i} for i in range(200)]
    given, stored = given_vectors(batch, store.get(ref.batch_vectors_key(batch_id)))
    assert given == list(range(200))
    assert stored.tobytes() == sent.tobytes()
    batch_bytes = len(store.get(ref.batch_key(batch_id))) + len(store.get(ref.batch_vectors_key(batch_id)))
    assert batch_bytes < 200 * (384 * 4 + 100)
    assert batch_bytes * 2 < _legacy_batch_bytes(as_json)
    # and the embedder normalised them, as before, into the vectors the index is built from.
    assert decode_vectors(store.get(ref.vectors_key(batch_id))).tobytes() == normalize(sent).tobytes()
    hit = (await _search(api, {"vector": sent[7].tolist(), "k": 1, "include": ["vector"]}))["results"][0]
    assert hit["id"] == "d7"
    assert np.array_equal(np.asarray(hit["vector"], dtype=np.float32), normalize(sent[7:8])[0])
