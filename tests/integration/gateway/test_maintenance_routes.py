"""Operator routes on the gateway with a real Redis: schedules, rollback, and index statistics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from services.gateway.main import build as build_gateway
from services.indexer import stats
from services.scheduler.main import build as build_scheduler
from shared import keys
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.messaging.events import ScheduleFired
from shared.records import apikeys
from tests.integration.gateway.conftest import Api
from tests.peers import eventually
from tests.streams import events_of


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


@pytest.fixture
def reader(redis_client: redis.Redis) -> dict[str, str]:
    key = apikeys.new_key()
    apikeys.store(redis_client, key, "acme", apikeys.Role.READER)
    return {"Authorization": f"Bearer {key}"}


async def test_schedules_are_listed_paused_resumed_and_triggered(
    api: Api, settings: Settings, redis_client: redis.Redis
) -> None:
    listed = await _json(await api.client.get("/v1/schedules", headers=api.auth), 200)
    by_name = {s["name"]: s for s in listed["schedules"]}
    assert set(by_name) == {"compaction", "cleanup", "stats", "delivery-sweep", "digest"}
    digest = by_name["digest"]
    assert (digest["cron"], digest["timezone"], digest["missed"], digest["paused"]) == (
        "0 8 * * 1",
        "UTC",
        "run_once",
        False,
    )
    assert digest["next_run"] and digest["last_run"] is None

    paused = await _json(await api.client.post("/v1/schedules/cleanup/pause", headers=api.auth), 200)
    assert paused["paused"] is True
    resumed = await _json(await api.client.post("/v1/schedules/cleanup/resume", headers=api.auth), 200)
    assert resumed["paused"] is False

    # A trigger is fired by whichever scheduler replica leads.
    await _json(await api.client.post("/v1/schedules/stats/trigger", headers=api.auth), 202)
    async with build_scheduler(settings) as scheduler:
        assert await scheduler.try_to_lead()
        await scheduler.step()
    fired = events_of(redis_client, ScheduleFired)
    assert [(f.schedule, f.manual) for f in fired] == [("stats", True)]
    listed = await _json(await api.client.get("/v1/schedules", headers=api.auth), 200)
    last = next(s for s in listed["schedules"] if s["name"] == "stats")["last_run"]
    assert last["manual"] is True and last["outcome"] == "enqueued" and last["run_id"] == fired[0].run_id


async def test_schedule_routes_need_an_admin_key_and_a_known_schedule(api: Api, reader: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/schedules"), ("POST", "/v1/schedules/stats/trigger"),
                         ("POST", "/v1/schedules/stats/pause"), ("POST", "/v1/collections/docs/rollback")):  # fmt: skip
        resp = await api.client.request(method, path, headers=reader)
        body = await _json(resp, 403)
        assert resp.headers["Content-Type"].startswith("application/problem+json") and body["status"] == 403
    await _json(await api.client.post("/v1/schedules/nope/pause", headers=api.auth), 404)


async def _wait_job(api: Api, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = await _json(await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth), 200)
        if job["state"] in ("succeeded", "failed", "dead"):
            return job
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish")


async def _ingest(api: Api, docs: list[tuple[str, int]]) -> str:
    """Documents given by id and the axis of their one-hot vector; returns the version they made live."""
    body = {"documents": [{"id": d, "vector": [1.0 if i == axis else 0.0 for i in range(384)]} for d, axis in docs]}
    accepted = await _json(await api.client.post("/v1/collections/docs/documents", json=body, headers=api.auth), 202)
    job = await _wait_job(api, accepted["job_id"])
    assert job["state"] == "succeeded", job
    return str(job["index_version"])


async def _ids(api: Api) -> set[str]:
    body = {"vector": [1.0] * 384, "k": 100}
    found = await _json(await api.client.post("/v1/collections/docs/search", json=body, headers=api.auth), 200)
    return {r["id"] for r in found["results"]}


@pytest.mark.usefixtures("workers")
async def test_rollback_publishes_an_earlier_version_and_refuses_bad_ones(
    api: Api, redis_client: redis.Redis, settings: Settings, store: LocalStore
) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    await api.client.put("/v1/collections/other", headers=api.auth)
    v1 = await _ingest(api, [("a", 0), ("b", 1)])
    v2 = await _ingest(api, [("c", 2), ("a", 3)])
    assert await _ids(api) == {"a", "b", "c"}

    accepted = await _json(
        await api.client.post("/v1/collections/docs/rollback", json={"version": v1}, headers=api.auth), 202
    )
    assert accepted["version"] == v1
    job = await _wait_job(api, accepted["job_id"])
    assert job["state"] == "succeeded" and job["kind"] == "rollback"
    info = await _json(await api.client.get("/v1/collections/docs", headers=api.auth), 200)
    assert info["index_version"] == job["index_version"] and info["index_version"].startswith("0000000003-")
    assert info["documents"] == 2 and await _ids(api) == {"a", "b"}
    # c, written after v1, can be sent again.
    await _ingest(api, [("c", 2)])
    assert await _ids(api) == {"a", "b", "c"}

    async def refused(version: object, status: int, collection: str = "docs") -> None:
        resp = await api.client.post(
            f"/v1/collections/{collection}/rollback", json={"version": version}, headers=api.auth
        )
        await _json(resp, status)

    await refused("not-a-version", 422)
    await refused("0000000001-0123456789abcdef", 404)
    await refused(v2, 409, collection="other")  # another collection's version
    redis_client.zadd(keys.removed_versions("acme", "docs"), {"0000000002-0123456789abcdef": 1})
    await refused("0000000002-0123456789abcdef", 409)  # removed by cleanup
    live = keys.text(redis_client.get(keys.latest("acme", "docs")) or b"")
    await refused(live, 409)  # already live
    await refused(v1, 404, collection="missing")


async def test_statistics_show_in_the_collection_and_as_gauges(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, api_key: str,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    app = build_gateway(
        settings.model_copy(update={"stats_refresh_s": 0.1}), store=store, encoder_loader=lambda: encoder
    )
    client: TestClient = await aiohttp_client(app)  # type: ignore[type-arg]
    auth = {"Authorization": f"Bearer {api_key}"}
    await client.put("/v1/collections/docs", headers=auth)
    info = await _json(await client.get("/v1/collections/docs", headers=auth), 200)
    assert info["stats"] is None  # not measured yet

    stats.refresh(redis_client, store)  # what the statistics actor runs

    info = await _json(await client.get("/v1/collections/docs", headers=auth), 200)
    assert info["stats"]["vectors"] == 0 and info["stats"]["segments"] == 0 and info["stats"]["memory_bytes"] == 0

    async def shown() -> str | None:
        exposition = await (await client.get("/metrics", headers=auth)).text()
        return exposition if 'semaflow_index_vectors{collection="docs",tenant="acme"} 0.0' in exposition else None

    exposition = await eventually(shown, timeout_s=5)
    assert 'semaflow_index_segments{collection="docs",tenant="acme"} 0.0' in exposition
