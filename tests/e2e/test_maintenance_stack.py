"""Maintenance through `semaflow up`: an operator trigger reaches the leading scheduler, which enqueues
the indexer's maintenance actor; its outcome, the compacted index and the statistics show over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Stack, corpus, ingest, search, wait_job

pytestmark = pytest.mark.e2e


async def _get(session: aiohttp.ClientSession, stack: Stack, path: str) -> Any:
    async with session.get(f"{stack.url}{path}", headers=stack.auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _run(session: aiohttp.ClientSession, stack: Stack, schedule: str) -> dict[str, Any]:
    """Trigger a schedule and wait for the outcome its actor reports."""
    async with session.post(f"{stack.url}/v1/schedules/{schedule}/trigger", headers=stack.auth) as resp:
        assert resp.status == 202, await resp.text()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = await _get(session, stack, "/v1/schedules")
        last = next(s for s in listed["schedules"] if s["name"] == schedule)["last_run"]
        if last and last["manual"] and last["outcome"] in ("succeeded", "failed"):
            return dict(last)
        await asyncio.sleep(0.2)
    pytest.fail(f"schedule {schedule} did not finish\n{stack.logs()}")


async def test_triggered_compaction_statistics_and_rollback_work_across_the_processes(stack: Stack) -> None:
    docs = corpus(60, seed=5, prefix="m")
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{stack.url}/v1/collections/kept", headers=stack.auth) as r:
            assert r.status == 201
        for i in range(0, 60, 20):
            first = await wait_job(session, stack, await ingest(session, stack, "kept", docs[i : i + 20]))
            if i == 0:
                v1 = first["index_version"]
        before = await _get(session, stack, "/v1/collections/kept")
        assert before["segments"] == 3

        compaction = await _run(session, stack, "compaction")
        assert compaction["outcome"] == "succeeded", compaction
        after = await _get(session, stack, "/v1/collections/kept")
        assert after["segments"] == 1 and after["documents"] == 60
        assert after["index_version"] > before["index_version"]
        found = await search(session, stack, "kept", {"query": docs[42]["text"], "k": 1})
        assert found["results"][0]["id"] == "m42" and found["index_version"] == after["index_version"]

        stats = await _run(session, stack, "stats")
        assert stats["outcome"] == "succeeded", stats
        info = await _get(session, stack, "/v1/collections/kept")
        assert info["stats"]["vectors"] == 60 and info["stats"]["segments"] == 1
        assert info["stats"]["version"] == after["index_version"] and info["stats"]["memory_bytes"] > 60 * 384 * 4
        deadline = time.monotonic() + 60
        line = 'semaflow_index_vectors{collection="kept",tenant="dev"} 60.0'
        while line not in (exposition := await (await session.get(f"{stack.url}/metrics", headers=stack.auth)).text()):
            assert time.monotonic() < deadline, exposition[-2000:]
            await asyncio.sleep(0.2)

        async with session.post(
            f"{stack.url}/v1/collections/kept/rollback", json={"version": v1}, headers=stack.auth
        ) as r:
            assert r.status == 202, await r.text()
            job = await wait_job(session, stack, (await r.json())["job_id"])
        rolled = await _get(session, stack, "/v1/collections/kept")
        assert rolled["index_version"] == job["index_version"] and rolled["documents"] == 20
        found = await search(session, stack, "kept", {"query": docs[5]["text"], "k": 1})
        assert found["results"][0]["id"] == "m5" and found["index_version"] == rolled["index_version"]
