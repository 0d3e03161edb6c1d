"""End to end: services as separate processes, as `semaflow up` runs them."""

from __future__ import annotations

import asyncio
import random
import signal
import stat
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import pytest
import redis
from standardwebhooks import Webhook

from semaflow.redis_server import PASSWORD_FILE
from shared.priority import autogroup_niceness, sessions_grouped, thread_niceness
from tests.e2e.conftest import WORDS, Stack, corpus, ingest, search, start_stack, wait_job
from tests.peers import Receiver

pytestmark = pytest.mark.e2e


async def test_200_documents_are_each_found_by_their_own_text(stack: Stack) -> None:
    docs = corpus(200, seed=1, prefix="d")
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{stack.url}/v1/collections/e2e", headers=stack.auth) as r:
            assert r.status == 201
        jobs = [await ingest(session, stack, "e2e", docs[i : i + 50]) for i in range(0, 200, 50)]
        for job_id in jobs:
            await wait_job(session, stack, job_id)
        async with session.get(f"{stack.url}/v1/collections/e2e", headers=stack.auth) as r:
            info = await r.json()
        assert info["documents"] == 200 and info["segments"] == 4

        for doc in random.Random(2).sample(docs, 20):
            out = await search(session, stack, "e2e", {"query": doc["text"], "k": 3})
            assert out["results"][0]["id"] == doc["id"], (doc, out)
            assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
            assert out["results"][0]["metadata"] == doc["metadata"]


async def test_hot_swap_serves_every_request_and_versions_only_move_forward(stack: Stack) -> None:
    # Given a collection with an index, and clients searching it without pause,
    rng = np.random.default_rng(3)
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{stack.url}/v1/collections/swap", headers=stack.auth) as r:
            assert r.status == 201
        await wait_job(session, stack, await ingest(session, stack, "swap", corpus(20, seed=10, prefix="s0-")))
        stop = asyncio.Event()
        seen: list[list[str]] = []
        failures: list[str] = []
        counts = [0]

        async def client(n: int) -> None:
            versions: list[str] = []
            seen.append(versions)
            while not stop.is_set():
                body: dict[str, Any] = (
                    {"query": f"{WORDS[n]} {WORDS[n + 7]}", "k": 5}
                    if n % 2
                    else {"vector": rng.normal(size=384).tolist(), "k": 5}
                )
                try:
                    async with session.post(
                        f"{stack.url}/v1/collections/swap/search", json=body, headers=stack.auth
                    ) as resp:
                        if resp.status != 200:
                            failures.append(f"{resp.status}: {await resp.text()}")
                            continue
                        out = await resp.json()
                        versions.append(out["index_version"])
                        counts[0] += 1
                except aiohttp.ClientError as exc:
                    failures.append(repr(exc))

        clients = [asyncio.create_task(client(n)) for n in range(8)]
        # When 5 more batches are ingested and published one after another,
        published = []
        for b in range(1, 6):
            job = await wait_job(
                session, stack, await ingest(session, stack, "swap", corpus(20, seed=10 + b, prefix=f"s{b}-"))
            )
            published.append(job["index_version"])
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*clients)

    # Then no request failed, and each client only ever saw versions move forward.
    assert failures == []
    assert counts[0] > 50
    for versions in seen:
        assert versions == sorted(versions)
    assert len(set(published)) == 5 and published == sorted(published)
    assert any(published[-1] in versions for versions in seen)


async def test_ingested_texts_are_read_back_by_id_listed_page_by_page_and_returned_by_search(stack: Stack) -> None:
    # Given 60 documents of real text ingested in three batches, and one of them deleted,
    docs = corpus(60, seed=7, prefix="r")
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{stack.url}/v1/collections/readback", headers=stack.auth) as r:
            assert r.status == 201
        for i in range(0, 60, 20):
            await wait_job(session, stack, await ingest(session, stack, "readback", docs[i : i + 20]))
        async with session.delete(f"{stack.url}/v1/collections/readback/documents/r13", headers=stack.auth) as r:
            job = await wait_job(session, stack, str((await r.json())["job_id"]))
        live = {d["id"]: d for d in docs if d["id"] != "r13"}

        # When one is read by id, its text and metadata come back as sent (its vector on request);
        base = f"{stack.url}/v1/collections/readback/documents"
        async with session.get(f"{base}/r42?include=vector", headers=stack.auth) as r:
            assert r.status == 200, await r.text()
            got = await r.json()
        assert (got["id"], got["text"], got["metadata"]) == ("r42", docs[42]["text"], docs[42]["metadata"])
        assert got["index_version"] == job["index_version"] and len(got["vector"]) == 384
        async with session.get(f"{base}/r13", headers=stack.auth) as r:
            assert r.status == 404 and r.content_type == "application/problem+json"

        # the pages of a listing hold every live document exactly once,
        listed: list[str] = []
        cursor = None
        while True:
            params = {"limit": "16", **({"cursor": cursor} if cursor else {})}
            async with session.get(base, params=params, headers=stack.auth) as r:
                assert r.status == 200, await r.text()
                page = await r.json()
            listed += [d["id"] for d in page["documents"]]
            assert all(d["metadata"] == live[d["id"]]["metadata"] for d in page["documents"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(listed) == sorted(live) and len(listed) == len(live) == 59

        # and a search asked to include texts returns each hit's own.
        for doc in random.Random(8).sample(list(live.values()), 5):
            out = await search(session, stack, "readback", {"query": doc["text"], "k": 3, "include": ["text"]})
            assert out["results"][0]["id"] == doc["id"]
            assert all(hit["text"] == live[hit["id"]]["text"] for hit in out["results"])


async def test_a_subscriber_hears_of_an_ingest_through_signed_webhooks(stack: Stack) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            body = {"url": receiver.url("/events"), "event_types": ["job.*", "index.published"]}
            async with session.post(f"{stack.url}/v1/webhooks", json=body, headers=stack.auth) as r:
                assert r.status == 201, await r.text()
                secret = (await r.json())["secret"]
            async with session.put(f"{stack.url}/v1/collections/hooked", headers=stack.auth) as r:
                assert r.status == 201
            job_id = await ingest(session, stack, "hooked", corpus(3, seed=5, prefix="w"))
            job = await wait_job(session, stack, job_id)

        hits = await receiver.wait_for("/events", 2, timeout_s=60)
        events = {e["type"]: e for e in (Webhook(secret).verify(h.body, h.headers) for h in hits)}
        assert events["job.succeeded"]["data"]["job_id"] == job_id
        assert events["index.published"]["data"]["version"] == job["index_version"]
        assert events["index.published"]["source"] == "semaflow/indexer"
    finally:
        await receiver.stop()


def test_crashed_worker_is_restarted_and_stack_stops_cleanly(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "data")
    try:
        supervisor = psutil.Process(stack.process.pid)
        _check_private_redis(tmp_path / "data", supervisor, stack)
        _check_priorities(supervisor)
        indexer = next(p for p in supervisor.children() if "services.indexer" in " ".join(p.cmdline()))
        indexer.send_signal(signal.SIGKILL)
        indexer.wait(10)

        async def use_it() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.put(f"{stack.url}/v1/collections/c", headers=stack.auth) as r:
                    assert r.status == 201
                await wait_job(session, stack, await ingest(session, stack, "c", corpus(5, seed=9, prefix="x")))

        asyncio.run(use_it())
        children = supervisor.children(recursive=True)
        assert any("services.indexer" in " ".join(p.cmdline()) for p in children)
        assert "service.restarted" in stack.logs()
    finally:
        code = stack.stop()
    assert code == 0, stack.logs()
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child


def _check_priorities(supervisor: psutil.Process) -> None:
    """Background services run every thread (and their session's group) at SEMAFLOW_BACKGROUND_NICE (10), the
    gateway at the supervisor's priority."""
    own = supervisor.nice()
    by_service = {}
    for process in supervisor.children():
        service = next((a for a in process.cmdline() if a.startswith("services.")), None)
        if service is not None:
            by_service[service] = (thread_niceness(process.pid), autogroup_niceness(process.pid))
    background = max(10, own)
    # each service leads a session of its own: where the kernel groups sessions, each has its own group (the
    # supervisor's own session may have none: the root group holds init's session)
    gateway_group, background_group = (0, 10) if sessions_grouped() else (None, None)
    assert by_service == {
        "services.gateway": ({own}, gateway_group),
        "services.embedder": ({background}, background_group),
        "services.indexer": ({background}, background_group),
        "services.notifier": ({background}, background_group),
        "services.scheduler": ({background}, background_group),
    }


def _check_private_redis(data_dir: Path, supervisor: psutil.Process, stack: Stack) -> None:
    """The embedded Redis wants its password, which only 0600 files hold: not the logs, not any command line."""
    password = (data_dir / "redis" / PASSWORD_FILE).read_text().strip()
    assert stat.S_IMODE(data_dir.stat().st_mode) == stat.S_IMODE((data_dir / "redis").stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "redis" / PASSWORD_FILE).stat().st_mode) == 0o600
    url = (data_dir / "redis-url").read_text().strip()
    assert f":{password}@" in url and password not in stack.logs()
    for process in [supervisor, *supervisor.children(recursive=True)]:
        assert password not in " ".join(process.cmdline()), process
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    anonymous = redis.Redis(port=port, socket_connect_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()
