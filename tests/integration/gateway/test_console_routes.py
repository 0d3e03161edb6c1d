"""The console's page and files (no key, a strict policy) and the API it reads beyond the rest: who a key
is, stored versions with time and size, per-minute activity, and counting a bulk action before it runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import redis

from shared import clock, keys
from shared.constants import LIST_SCAN_BUDGET
from shared.messaging import tasks
from shared.messaging.workqueue import Priority
from shared.records import apikeys, jobs
from shared.records.apikeys import Role
from shared.records.jobs import Job, JobKind, JobState
from shared.runtime.heartbeat import Heartbeat
from tests.integration.gateway.conftest import Api


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


async def _wait_job(api: Api, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job: dict[str, Any] = await _json(await api.client.get(f"/v1/jobs/{job_id}?wait=5", headers=api.auth), 200)
        if job["state"] in ("succeeded", "failed", "dead"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job


async def _ingest(api: Api, docs: list[dict[str, Any]]) -> str:
    resp = await api.client.post("/v1/collections/docs/documents", json={"documents": docs}, headers=api.auth)
    job_id: str = (await _json(resp, 202))["job_id"]
    return job_id


async def test_the_console_page_and_its_files_need_no_key_and_carry_a_strict_policy(api: Api) -> None:
    page = await api.client.get("/console")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = await page.text()
    assert '<script type="module" src="/console/app.js">' in html
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"

    script = await api.client.get("/console/app.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert script.headers["Content-Security-Policy"] == csp
    assert (await api.client.get("/console/console.css")).headers["Content-Type"].startswith("text/css")

    for missing in ("/console/nothing.js", "/console/..%2Fapi%2Fconsole.py", "/console/index.html.bak"):
        assert (await api.client.get(missing)).status == 404, missing


async def test_me_names_the_keys_tenant_and_role_and_needs_a_key(api: Api, redis_client: redis.Redis) -> None:
    me = await _json(await api.client.get("/v1/me", headers=api.auth), 200)
    assert (me["tenant"], me["role"]) == ("acme", "admin")
    assert me["key_id"].startswith("key_") and api.key not in str(me)

    reader = apikeys.new_key()
    apikeys.store(redis_client, reader, "globex", Role.READER, name="dashboards")
    me = await _json(await api.client.get("/v1/me", headers={"Authorization": f"Bearer {reader}"}), 200)
    assert (me["tenant"], me["role"], me["name"]) == ("globex", "reader", "dashboards")

    assert (await api.client.get("/v1/me")).status == 401


@pytest.mark.usefixtures("workers")
async def test_versions_page_newest_first_with_time_size_and_the_live_one(api: Api) -> None:
    # Given a collection published twice
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    for n in range(2):
        job = await _wait_job(api, await _ingest(api, [{"id": f"d{n}", "text": f"document number {n}"}]))
        assert job["state"] == "succeeded", job

    # When its versions are read one per page
    first = await _json(await api.client.get("/v1/collections/docs/versions?limit=1", headers=api.auth), 200)
    cursor = first["next_cursor"]
    assert cursor is not None
    second = await _json(
        await api.client.get(f"/v1/collections/docs/versions?limit=1&cursor={cursor}", headers=api.auth), 200
    )

    # Then the newest (live) comes first, the older after, and the pages end
    info = await _json(await api.client.get("/v1/collections/docs", headers=api.auth), 200)
    (newest,), (older,) = first["versions"], second["versions"]
    assert newest["version"] == info["index_version"] and newest["live"] is True
    assert older["live"] is False and older["version"] < newest["version"]
    assert older["created_at"] <= newest["created_at"]
    assert newest["bytes"] > older["bytes"] > 0  # the newer version names one more segment
    assert second["next_cursor"] is None

    # And the documents embedded show in this minute's activity
    activity = await _json(await api.client.get("/v1/activity?minutes=5", headers=api.auth), 200)
    assert len(activity["embedded"]) == len(activity["deliveries"]) == 5
    assert sum(activity["embedded"]) == 2


async def test_a_bulk_dry_run_counts_what_it_would_change_and_changes_nothing(api: Api) -> None:
    # Given two queued jobs (no workers run)
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    ids = [await _ingest(api, [{"id": f"q{n}", "text": "waiting"}]) for n in range(2)]

    counted = await _json(
        await api.client.post("/v1/jobs:cancel", json={"collection": "docs", "dry_run": True}, headers=api.auth), 200
    )
    assert counted == {"matched": 2}
    nothing_to_retry = await _json(
        await api.client.post("/v1/jobs:retry", json={"collection": "docs", "dry_run": True}, headers=api.auth), 200
    )
    assert nothing_to_retry == {"matched": 0}
    for job_id in ids:
        assert (await _json(await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth), 200))["state"] == "queued"

    # A dry run alone is no filter
    assert (await api.client.post("/v1/jobs:cancel", json={"dry_run": True}, headers=api.auth)).status == 422

    done = await _json(await api.client.post("/v1/jobs:cancel", json={"collection": "docs"}, headers=api.auth), 200)
    assert done == {"matched": 2}


async def test_a_filter_few_jobs_match_answers_short_pages_that_go_on_to_the_match(
    api: Api, redis_client: redis.Redis
) -> None:
    # Given 2,100 finished jobs and, older than all of them, one failed job
    now = datetime.now(UTC)

    def job(n: int, state: JobState) -> Job:
        stamp = now - timedelta(seconds=n)
        return Job(
            id=jobs.new_job_id(),
            tenant="acme",
            collection="docs",
            kind=JobKind.INGEST,
            state=state,
            documents=1,
            created_at=stamp,
            updated_at=stamp,
        )

    failed = job(LIST_SCAN_BUDGET + 100, JobState.FAILED)
    assert jobs.create_many(redis_client, [job(n, JobState.SUCCEEDED) for n in range(LIST_SCAN_BUDGET + 99)]) > 0
    jobs.create_many(redis_client, [failed])

    # When the failed jobs are listed: the first request reads its budget, finds none, and says where to go on
    first = await _json(await api.client.get("/v1/jobs?state=failed&limit=10", headers=api.auth), 200)
    assert first["jobs"] == [] and first["next_cursor"] is not None
    second = await _json(
        await api.client.get(f"/v1/jobs?state=failed&limit=10&cursor={first['next_cursor']}", headers=api.auth), 200
    )
    # Then the next page holds the match, and the list ends there
    assert [j["id"] for j in second["jobs"]] == [failed.id]
    assert second["next_cursor"] is None


async def test_jobs_are_listed_by_priority_and_creation_time(api: Api, redis_client: redis.Redis) -> None:
    # Given jobs an hour, a minute and a second old, the newest two at low priority,
    now = datetime.now(UTC)

    def job(age: timedelta, priority: Priority) -> Job:
        stamp = now - age
        return Job(id=jobs.new_job_id(), tenant="acme", collection="docs", kind=JobKind.INGEST, priority=priority,
                   state=JobState.SUCCEEDED,
                   documents=1, created_at=stamp, updated_at=stamp)  # fmt: skip

    old, minute, second = (job(timedelta(hours=1), Priority.NORMAL), job(timedelta(minutes=1), Priority.LOW),
                           job(timedelta(seconds=1), Priority.LOW))  # fmt: skip
    jobs.create_many(redis_client, [old, minute, second])

    async def ids(query: str) -> list[str]:
        page = await _json(await api.client.get(f"/v1/jobs?{query}", headers=api.auth), 200)
        return [j["id"] for j in page["jobs"]]

    # Then each filter, and their combination, picks its own (newest first),
    assert await ids("priority=low") == [second.id, minute.id]
    since = quote((now - timedelta(minutes=10)).isoformat())
    until = quote((now - timedelta(seconds=30)).isoformat())
    assert await ids(f"created_after={since}") == [second.id, minute.id]
    assert await ids(f"created_before={until}") == [minute.id, old.id]
    assert await ids(f"priority=low&created_before={until}") == [minute.id]
    # and a value the API cannot read is refused.
    resp = await api.client.get("/v1/jobs?priority=urgent", headers=api.auth)
    assert resp.status == 422


async def test_queue_statistics_count_live_workers_and_held_delayed_work_by_name(
    api: Api, redis_client: redis.Redis
) -> None:
    # Given an embedder process beating, and a Dramatiq worker holding two delayed embed tokens
    beat = Heartbeat(redis_client, "embedder", ttl_s=30)
    beat.start()
    try:
        redis_client.zadd(keys.dramatiq_heartbeats(), {"w-one": clock.now_ms()})
        redis_client.sadd(keys.dramatiq_delay_acks("w-one", tasks.EMBED_QUEUE), "t1", "t2")
        redis_client.rpush(keys.dramatiq_queues(tasks.EMBED_QUEUE)[1], "t3")
        embed = (await _json(await api.client.get("/v1/queues", headers=api.auth), 200))["queues"]["embed"]
        assert (embed["workers"], embed["delayed"]) == (1, 3)
    finally:
        beat.stop()
    # Then a process that stopped is no longer counted
    embed = (await _json(await api.client.get("/v1/queues", headers=api.auth), 200))["queues"]["embed"]
    assert embed["workers"] == 0


async def test_without_an_index_of_heartbeats_workers_are_found_by_their_keys(
    api: Api, redis_client: redis.Redis
) -> None:
    # A process of a version before the index beats its key only.
    redis_client.set(keys.heartbeat("indexer", "old-host:42"), "{}", ex=30)
    index = (await _json(await api.client.get("/v1/queues", headers=api.auth), 200))["queues"]["index"]
    assert index["workers"] == 1
