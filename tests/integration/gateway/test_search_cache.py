"""Two-level search cache with two gateway replicas on one Redis: hits per level, never a stale version."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import redis
from pytest_aiohttp import AiohttpClient

from services.gateway.appkeys import CACHE
from services.gateway.main import build as build_gateway
from shared import keys
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.records import apikeys
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Api, Client
from tests.peers import eventually

pytestmark = pytest.mark.usefixtures("workers")

NEAR = [1.0, 0.1] + [0.0] * 382


def _unit(i: int) -> list[float]:
    v = [0.0] * 384
    v[i] = 1.0
    return v


async def _ingest(client: Client, auth: dict[str, str], docs: list[dict[str, Any]]) -> str:
    resp = await client.post("/v1/collections/docs/documents", json={"documents": docs}, headers=auth)
    assert resp.status == 202, await resp.text()
    job_id: str = (await resp.json())["job_id"]
    for _ in range(600):
        job = await (await client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
        if job["state"] == "succeeded":
            return str(job["index_version"])
        assert job["state"] in ("queued", "running"), job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def _search(
    client: Client,
    auth: dict[str, str],
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any], bytes]:
    resp = await client.post("/v1/collections/docs/search", json=body, headers={**auth, **(headers or {})})
    assert resp.status == 200, await resp.text()
    raw = await resp.read()
    return resp.headers["Cache-Status"], await resp.json(), raw


@pytest.fixture
async def replica(aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder) -> Client:
    """A second gateway on the same Redis and store."""
    return await aiohttp_client(build_gateway(settings, store=store, encoder_loader=lambda: encoder))


def _metric(text: str, level: str, result: str) -> float:
    pattern = rf'semaflow_search_cache_requests_total{{level="{level}",result="{result}"}} ([0-9.e+]+)'
    found = re.search(pattern, text)
    assert found, text[:2000]
    return float(found.group(1))


async def test_answers_come_from_l1_then_l2_on_another_replica_and_never_from_an_old_version(
    api: Api,
    replica: Client,
    redis_client: redis.Redis,
) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    first = await _ingest(api.client, api.auth, [{"id": "x", "vector": _unit(0)}, {"id": "y", "vector": _unit(1)}])

    status, body, raw = await _search(api.client, api.auth, {"vector": NEAR, "k": 2})
    assert status == "semaflow; fwd=miss" and body["index_version"] == first
    assert [r["id"] for r in body["results"]] == ["x", "y"]
    status, _, again = await _search(api.client, api.auth, {"vector": NEAR, "k": 2})
    assert status == "semaflow-l1; hit" and again == raw

    # Another replica has nothing in its L1, but Redis has the answer.
    status, _, shared = await _search(replica, api.auth, {"vector": NEAR, "k": 2})
    assert status == "semaflow-l2; hit" and shared == raw
    assert (await _search(replica, api.auth, {"vector": NEAR, "k": 2}))[0] == "semaflow-l1; hit"

    # k and the filter are part of the key; so is a scaled copy of the vector, which is the same query.
    assert (await _search(api.client, api.auth, {"vector": NEAR, "k": 1}))[0] == "semaflow; fwd=miss"
    scaled = [2 * x for x in NEAR]  # exactly representable: the same unit vector, bit for bit
    assert (await _search(api.client, api.auth, {"vector": scaled, "k": 2}))[0] == "semaflow-l1; hit"
    assert (await _search(api.client, api.auth, {"vector": NEAR, "k": 2, "filter": {"a": 1}}))[0].endswith("miss")

    # Cache-Control: no-cache asks for a fresh answer; no-store keeps one out of the cache.
    fresh = await _search(api.client, api.auth, {"vector": NEAR, "k": 2}, {"Cache-Control": "no-cache"})
    assert fresh[0] == "semaflow; fwd=miss" and fresh[2] == raw
    unstored = {"vector": NEAR, "k": 3}
    assert (await _search(api.client, api.auth, unstored, {"Cache-Control": "no-store"}))[0].endswith("miss")
    assert (await _search(api.client, api.auth, unstored))[0] == "semaflow; fwd=miss"
    assert (await _search(api.client, api.auth, unstored))[0] == "semaflow-l1; hit"

    # A new index version is a new key: the next answer is computed from it, on both replicas.
    second = await _ingest(api.client, api.auth, [{"id": "z", "vector": NEAR}])
    assert second != first
    for client in (api.client, replica):
        for _ in range(100):  # the replica swaps the version in when its follower sees the event
            status, body, _ = await _search(client, api.auth, {"vector": NEAR, "k": 2})
            if body["index_version"] == second:
                break
            await asyncio.sleep(0.05)
        assert body["index_version"] == second and body["results"][0]["id"] == "z"
        assert status.endswith("miss") or client is replica

    metrics = await (await api.client.get("/metrics")).text()
    assert _metric(metrics, "l1", "hit") >= 2
    assert _metric(metrics, "l1", "miss") >= 3
    assert _metric(metrics, "l2", "miss") >= 3


async def test_text_queries_share_an_entry_when_only_whitespace_differs(api: Api) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    await _ingest(api.client, api.auth, [{"id": "cat", "text": "The cat sits on the mat."}])
    assert (await _search(api.client, api.auth, {"query": "a kitten on a rug"}))[0].endswith("miss")
    assert (await _search(api.client, api.auth, {"query": "  a kitten\ton a   rug "}))[0] == "semaflow-l1; hit"
    assert (await _search(api.client, api.auth, {"query": "A kitten on a rug"}))[0].endswith("miss")


async def test_tenants_never_share_answers(api: Api, redis_client: redis.Redis) -> None:
    other = apikeys.new_key()
    apikeys.store(redis_client, other, "globex", Role.WRITER)
    other_auth = {"Authorization": f"Bearer {other}"}
    for auth, doc in ((api.auth, "mine"), (other_auth, "theirs")):
        assert (await api.client.put("/v1/collections/docs", headers=auth)).status == 201
        await _ingest(api.client, auth, [{"id": doc, "vector": _unit(0)}])
    mine = await _search(api.client, api.auth, {"vector": NEAR, "k": 1})
    theirs = await _search(api.client, other_auth, {"vector": NEAR, "k": 1})
    assert mine[0].endswith("miss") and theirs[0].endswith("miss")
    assert mine[1]["results"][0]["id"] == "mine" and theirs[1]["results"][0]["id"] == "theirs"


async def test_deleting_a_collection_drops_its_entries_everywhere(
    api: Api,
    replica: Client,
    redis_client: redis.Redis,
) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    await _ingest(api.client, api.auth, [{"id": "x", "vector": _unit(0)}])
    for k in (1, 2, 3):
        await _search(api.client, api.auth, {"vector": NEAR, "k": k})
        await _search(replica, api.auth, {"vector": NEAR, "k": k})
    pattern = keys.search_cache_pattern("acme", "docs")
    assert len(list(redis_client.scan_iter(match=pattern))) == 3
    replica_cache = replica.app[CACHE]
    assert replica_cache.l1 is not None and len(replica_cache.l1) == 3

    assert (await api.client.delete("/v1/collections/docs", headers=api.auth)).status == 204
    assert list(redis_client.scan_iter(match=pattern)) == []
    l1 = replica_cache.l1
    await eventually(lambda: len(l1) == 0, timeout_s=5)  # the replica hears of the deletion from the stream
    assert len(replica_cache.l1) == 0
