"""Job control over HTTP with in-process workers on a real Redis: cancel, retry, dead letters, queues."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.records import apikeys
from tests.integration.gateway.conftest import Api, running_workers

FINAL = ("succeeded", "failed", "cancelled", "dead")


async def _collection(api: Api, name: str = "docs") -> None:
    assert (await api.client.put(f"/v1/collections/{name}", headers=api.auth)).status in (200, 201)


async def _ingest(api: Api, ids: list[str], *, name: str = "docs", priority: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"documents": [{"id": i, "text": f"document {i} about topic {i}"} for i in ids]}
    if priority:
        body["priority"] = priority
    resp = await api.client.post(f"/v1/collections/{name}/documents", json=body, headers=api.auth)
    assert resp.status == 202, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def _job(api: Api, job_id: str) -> dict[str, Any]:
    resp = await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth)
    assert resp.status == 200
    out: dict[str, Any] = await resp.json()
    return out


async def _wait(api: Api, job_id: str, states: tuple[str, ...] = FINAL, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = await _job(api, job_id)
        if job["state"] in states:
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


def _batch_key(store: LocalStore, batch_id: str) -> str:
    """The stored object of an accepted batch."""
    return next(k for k in store.list("") if batch_id in k and "/batches/" in k)


async def _documents(api: Api, name: str = "docs") -> int:
    info = await (await api.client.get(f"/v1/collections/{name}", headers=api.auth)).json()
    return int(info["documents"])


async def test_a_cancelled_queued_job_never_runs(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    doomed = await _ingest(api, ["x1", "x2"])
    resp = await api.client.post(f"/v1/jobs/{doomed['job_id']}/cancel", headers=api.auth)
    assert resp.status == 200
    assert (await resp.json())["state"] == "cancelled"
    again = await api.client.post(f"/v1/jobs/{doomed['job_id']}/cancel", headers=api.auth)
    assert again.status == 409
    assert again.content_type == "application/problem+json"

    with running_workers(settings, store, encoder):
        kept = await _ingest(api, ["k1"])
        assert (await _wait(api, kept["job_id"]))["state"] == "succeeded"
        await asyncio.sleep(0.5)  # a spare token of the cancelled job has run by now, finding nothing

    job = await _job(api, doomed["job_id"])
    assert job["state"] == "cancelled" and job["embedded"] == 0 and job["attempts"] == 0
    assert await _documents(api) == 1
    assert not [k for k in store.list("") if "vectors" in k and doomed["batch_id"] in k]  # never embedded


async def test_a_cancelled_job_can_be_retried_and_a_succeeded_one_cannot(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["r1", "r2", "r3"])
    await api.client.post(f"/v1/jobs/{accepted['job_id']}/cancel", headers=api.auth)

    resp = await api.client.post(f"/v1/jobs/{accepted['job_id']}/retry", headers=api.auth)
    assert resp.status == 202
    assert (await resp.json())["state"] == "queued"
    with running_workers(settings, store, encoder):
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "succeeded", job
    assert job["embedded"] == 3 and job["indexed"] == 3 and job["attempts"] == 1
    assert await _documents(api) == 3
    assert (await api.client.post(f"/v1/jobs/{accepted['job_id']}/retry", headers=api.auth)).status == 409
    assert (await api.client.post(f"/v1/jobs/{accepted['job_id']}/cancel", headers=api.auth)).status == 409


async def test_exhausted_retries_leave_a_dead_letter_that_replays(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder, redis_client: redis.Redis
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["d1", "d2"])
    batch_key = _batch_key(store, accepted["batch_id"])
    saved = store.get(batch_key)
    store.delete(batch_key)  # the object store "loses" the batch: a transient error on every attempt

    with running_workers(settings, store, encoder):
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "dead", job
    assert job["attempts"] == settings.max_retries + 1
    assert "ObjectNotFound" in job["error"]

    listing = await (await api.client.get("/v1/dead-letters", headers=api.auth)).json()
    assert [d["job_id"] for d in listing["dead_letters"]] == [accepted["job_id"]]
    letter = listing["dead_letters"][0]
    assert letter["id"] == job["dead_letter"]
    assert letter["queue"] == "embed" and letter["op"] == "embed_batch" and letter["collection"] == "docs"
    assert letter["attempts"] == settings.max_retries + 1 and "ObjectNotFound" in letter["error"]
    single = await api.client.get(f"/v1/dead-letters/{letter['id']}", headers=api.auth)
    assert (await single.json())["job_id"] == accepted["job_id"]
    queues = (await (await api.client.get("/v1/queues", headers=api.auth)).json())["queues"]
    assert queues["embed"]["dead"] == 1

    store.put(batch_key, saved)  # the outage is over
    resp = await api.client.post(f"/v1/dead-letters/{letter['id']}/replay", headers=api.auth)
    assert resp.status == 202
    assert (await resp.json())["state"] == "queued"
    with running_workers(settings, store, encoder):
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "succeeded", job
    assert job["dead_letter"] is None and job["error"] is None
    assert (await api.client.get(f"/v1/dead-letters/{letter['id']}", headers=api.auth)).status == 404
    assert await _documents(api) == 2


async def test_work_waits_out_an_object_store_outage_past_its_retries_and_then_succeeds(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["d1", "d2"])
    path = store.root / _batch_key(store, accepted["batch_id"])
    saved = path.read_bytes()
    path.unlink()
    path.symlink_to(path)  # reading it fails with an OS error: the store is "unreachable"

    with running_workers(settings, store, encoder):
        for _ in range(100):  # until it has failed well past its retries
            job = await _job(api, accepted["job_id"])
            if job["attempts"] > settings.max_retries + 2:
                break
            await asyncio.sleep(0.1)
        assert job["state"] == "running" and "StorageUnavailable" in job["error"], job
        assert job["dead_letter"] is None
        # the store is back, in one step: between an unlink and a write a retry would find the batch missing
        restored = path.with_name(path.name + ".back")
        restored.write_bytes(saved)
        restored.replace(path)
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "succeeded", job
    assert await _documents(api) == 2


async def test_an_outage_longer_than_the_patience_leaves_a_dead_letter(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["d1"])
    path = store.root / _batch_key(store, accepted["batch_id"])
    path.unlink()
    path.symlink_to(path)
    impatient = settings.model_copy(update={"outage_patience_s": 0.0})
    with running_workers(impatient, store, encoder):
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "dead" and job["attempts"] == settings.max_retries + 1, job


async def test_a_permanent_error_fails_the_job_without_retries(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["p1"])
    batch_key = _batch_key(store, accepted["batch_id"])
    store.put(batch_key, b"not a batch file")

    with running_workers(settings, store, encoder):
        job = await _wait(api, accepted["job_id"])
    assert job["state"] == "failed" and job["attempts"] == 1
    assert "CorruptObject" in job["error"]
    listing = await (await api.client.get("/v1/dead-letters", headers=api.auth)).json()
    assert listing["dead_letters"] == []


async def test_dead_letters_can_be_deleted_and_are_private_to_their_tenant(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder, redis_client: redis.Redis
) -> None:
    await _collection(api)
    accepted = await _ingest(api, ["z1"])
    batch_key = _batch_key(store, accepted["batch_id"])
    store.delete(batch_key)
    with running_workers(settings, store, encoder):
        job = await _wait(api, accepted["job_id"])
    letter_id = job["dead_letter"]
    other = apikeys.new_key()
    apikeys.store(redis_client, other, "globex")
    foreign = {"Authorization": f"Bearer {other}"}

    assert (await api.client.get(f"/v1/dead-letters/{letter_id}", headers=foreign)).status == 404
    assert (await api.client.post(f"/v1/dead-letters/{letter_id}/replay", headers=foreign)).status == 404
    assert (await api.client.get(f"/v1/jobs/{accepted['job_id']}", headers=foreign)).status == 404
    assert (await api.client.post(f"/v1/jobs/{accepted['job_id']}/retry", headers=foreign)).status == 404
    assert (await api.client.delete(f"/v1/dead-letters/{letter_id}", headers=api.auth)).status == 204
    assert (await api.client.get(f"/v1/dead-letters/{letter_id}", headers=api.auth)).status == 404


async def test_jobs_are_listed_newest_first_with_filters_and_a_cursor(api: Api) -> None:
    await _collection(api, "one")
    await _collection(api, "two")
    made = [(await _ingest(api, [f"l{i}"], name="one" if i % 2 else "two"))["job_id"] for i in range(5)]
    await api.client.post(f"/v1/jobs/{made[0]}/cancel", headers=api.auth)

    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.client.get(url, headers=api.auth)).json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))

    queued = await (await api.client.get("/v1/jobs?state=queued", headers=api.auth)).json()
    assert [j["id"] for j in queued["jobs"]] == list(reversed(made[1:]))
    in_one = await (await api.client.get("/v1/jobs?collection=one", headers=api.auth)).json()
    assert [j["id"] for j in in_one["jobs"]] == [made[3], made[1]]

    for bad in ("state=finished", "limit=0", "limit=x", "cursor=nonsense"):
        resp = await api.client.get(f"/v1/jobs?{bad}", headers=api.auth)
        assert resp.status == 422, bad


async def test_bulk_cancel_and_retry_by_filter(api: Api) -> None:
    await _collection(api, "docs")
    await _collection(api, "other")
    for i in range(3):
        await _ingest(api, [f"b{i}"], name="docs", priority="bulk")
    await _ingest(api, ["o1"], name="other")

    resp = await api.client.post("/v1/jobs:cancel", json={"collection": "docs"}, headers=api.auth)
    assert resp.status == 200 and await resp.json() == {"matched": 3}
    resp = await api.client.post("/v1/jobs:cancel", json={"collection": "docs"}, headers=api.auth)
    assert await resp.json() == {"matched": 0}
    resp = await api.client.post("/v1/jobs:retry", json={"state": "cancelled", "priority": "bulk"}, headers=api.auth)
    assert await resp.json() == {"matched": 3}
    queued = await (await api.client.get("/v1/jobs?state=queued", headers=api.auth)).json()
    assert len(queued["jobs"]) == 4
    assert (await api.client.post("/v1/jobs:cancel", json={}, headers=api.auth)).status == 422
    assert (await api.client.post("/v1/jobs:cancel", json={"state": "nope"}, headers=api.auth)).status == 422


async def test_queue_statistics_show_depth_by_priority(api: Api) -> None:
    await _collection(api)
    await _ingest(api, ["q1"], priority="bulk")
    await _ingest(api, ["q2"], priority="bulk")
    await _ingest(api, ["q3"], priority="critical")
    await asyncio.sleep(0.05)

    body = await (await api.client.get("/v1/queues", headers=api.auth)).json()
    embed = body["queues"]["embed"]
    assert embed["depth"] == {"critical": 1, "high": 0, "normal": 0, "low": 0, "bulk": 2}
    assert embed["in_flight"] == 0 and embed["dead"] == 0 and embed["workers"] == 0 and embed["delayed"] == 0
    assert embed["oldest_age_seconds"] > 0
    assert body["queues"]["index"]["depth"] == {"critical": 0, "high": 0, "normal": 0, "low": 0, "bulk": 0}


async def test_critical_work_queued_last_starts_first(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder
) -> None:
    await _collection(api)
    bulk = [(await _ingest(api, [f"bulk{i}"], priority="bulk"))["job_id"] for i in range(6)]
    critical = (await _ingest(api, ["urgent"], priority="critical"))["job_id"]

    # One job at a time: with two, the critical job and the best bulk one are taken together and either may
    # record its start first.
    with running_workers(settings.model_copy(update={"embedder_threads": 1}), store, encoder):
        jobs = {j: await _wait(api, j) for j in [*bulk, critical]}
    assert all(j["state"] == "succeeded" for j in jobs.values())
    first_bulk = min(jobs[j]["started_at"] for j in bulk)
    assert jobs[critical]["started_at"] < first_bulk
    assert jobs[critical]["priority"] == "critical"


@pytest.mark.parametrize("priority", ["urgent", 3, None])
async def test_an_unknown_priority_is_a_field_error(api: Api, priority: object) -> None:
    await _collection(api)
    body = {"documents": [{"id": "a", "text": "x"}], "priority": priority}
    resp = await api.client.post("/v1/collections/docs/documents", json=body, headers=api.auth)
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["pointer"] == "/priority"
