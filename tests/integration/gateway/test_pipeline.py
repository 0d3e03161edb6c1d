"""Gateway, embedder and indexer in-process on a real Redis broker: ingest, search, delete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
