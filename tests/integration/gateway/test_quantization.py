"""An int8 collection over HTTP (in-process embedder and indexer, real Redis, local store): created with its
setting, fed precomputed vectors, searched (the exact top hits, deletes and filters honoured), read back
decoded, and its statistics showing the recall measured."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
import redis

from semaflow.client import AsyncClient, Conflict
from services.indexer import stats
from shared.index.documents import normalize
from shared.index.storage import LocalStore
from tests.integration.gateway.conftest import Api

pytestmark = pytest.mark.usefixtures("workers")

COLL = "/v1/collections/small"


def _b64(vector: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def _clustered(n: int, seed: int = 11) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(15, 384))
    return normalize(centres[rng.integers(0, 15, n)] + rng.normal(scale=0.9, size=(n, 384)))


async def _call(api: Api, method: str, path: str, status: int, body: Any = None) -> Any:
    resp = await api.client.request(method, path, json=body, headers=api.auth)
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None) if resp.status != 204 else None


async def _done(api: Api, accepted: dict[str, Any]) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        job: dict[str, Any] = await _call(api, "GET", f"/v1/jobs/{accepted['job_id']}", 200)
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", job
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


def _exact(stored: np.ndarray[Any, Any], query: np.ndarray[Any, Any], allowed: list[int]) -> list[str]:
    scores = stored[allowed] @ query
    return [f"d{allowed[i]}" for i in np.argsort(-scores, kind="stable")[:10]]


async def test_an_unknown_quantization_is_refused_and_a_different_one_conflicts(api: Api) -> None:
    bad = await _call(api, "PUT", COLL, 422, {"quantization": "int4"})
    assert bad["errors"][0]["pointer"] == "/quantization"
    await _call(api, "PUT", COLL, 422, {"quantisation": "int8"})  # an unknown field too
    created = await _call(api, "PUT", COLL, 201, {"quantization": "int8"})
    assert created["quantization"] == "int8"
    # Confirming it (with no body, or the same setting) answers 200; asking for another setting, 409.
    assert (await _call(api, "PUT", COLL, 200))["quantization"] == "int8"
    assert (await _call(api, "PUT", COLL, 200, {"quantization": "int8"}))["quantization"] == "int8"
    assert (await _call(api, "PUT", COLL, 200, {}))["quantization"] == "int8"  # a setting left out is not asked
    conflict = await _call(api, "PUT", COLL, 409, {"quantization": "none"})
    assert "int8" in conflict["detail"]
    # A collection created without a body is float32.
    assert (await _call(api, "PUT", "/v1/collections/plain", 201))["quantization"] == "none"
    assert (await _call(api, "GET", "/v1/collections/plain", 200))["quantization"] == "none"


async def test_an_int8_collection_answers_the_exact_top_hits_and_reads_vectors_back_decoded(
    api: Api, redis_client: redis.Redis, store: LocalStore
) -> None:
    # Given an int8 collection fed 600 precomputed clustered vectors in two batches, each with a group,
    await _call(api, "PUT", COLL, 201, {"quantization": "int8"})
    vectors = _clustered(612)
    stored, queries = vectors[:600], vectors[600:]
    for start in (0, 300):
        docs = [
            {"id": f"d{i}", "vector_b64": _b64(stored[i]), "metadata": {"group": i % 3}}
            for i in range(start, start + 300)
        ]
        await _done(api, await _call(api, "POST", f"{COLL}/documents", 202, {"documents": docs}))
    # and the best hit of the first query deleted,
    doomed = int(_exact(stored, queries[0], list(range(600)))[0][1:])
    job = await _done(api, await _call(api, "DELETE", f"{COLL}/documents/d{doomed}", 202))
    live = [i for i in range(600) if i != doomed]
    # When it is searched by vector, with and without a filter,
    found = 0
    for query in queries:
        body = {"vector": query.tolist(), "k": 10}
        hits = (await _call(api, "POST", f"{COLL}/search", 200, body))["results"]
        # Then the deleted document never answers and the hits are the exact top 10 (recall@10),
        assert len(hits) == 10 and f"d{doomed}" not in {h["id"] for h in hits}
        found += len({h["id"] for h in hits} & set(_exact(stored, query, live)))
        # and the filter leaves only its group.
        filtered = (await _call(api, "POST", f"{COLL}/search", 200, {**body, "filter": {"group": 1}}))["results"]
        assert {h["metadata"]["group"] for h in filtered} == {1}
        assert len({h["id"] for h in filtered} & set(_exact(stored, query, [i for i in live if i % 3 == 1]))) >= 8
    assert found / (10 * len(queries)) >= 0.95, found
    # A vector read back (by id or with a hit) is the decoded int8 code: close to the one sent, not equal.
    got = await _call(api, "GET", f"{COLL}/documents/d5?include=vector", 200)
    assert got["index_version"] == job["index_version"]
    read = np.array(got["vector"], dtype=np.float32)
    assert np.abs(read - stored[5]).max() < 0.01 and not np.array_equal(read, stored[5])
    top = await _call(api, "POST", f"{COLL}/search", 200, {"vector": stored[5].tolist(), "k": 1, "include": ["vector"]})
    assert top["results"][0]["id"] == "d5" and top["results"][0]["vector"] == got["vector"]
    # And once statistics are measured, the collection shows its int8 segments and the lowest recall of them.
    stats.refresh(redis_client, store)
    info = await _call(api, "GET", COLL, 200)
    assert info["quantization"] == "int8" and info["stats"]["quantized_segments"] == 2
    assert info["stats"]["min_recall"] is not None and info["stats"]["min_recall"] >= 0.95


async def test_the_sdk_creates_an_int8_collection_and_a_conflicting_one_raises(api: Api) -> None:
    base = str(api.client.make_url("/")).rstrip("/")
    async with AsyncClient(base, api.key) as sf:
        created = await sf.create_collection("sdk-small", quantization="int8")
        assert created.quantization == "int8"
        assert (await sf.create_collection("sdk-small")).quantization == "int8"
        with pytest.raises(Conflict):
            await sf.create_collection("sdk-small", quantization="none")
        assert (await sf.create_collection("sdk-plain")).quantization == "none"
