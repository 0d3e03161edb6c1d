"""``semaflow doctor`` against a real Redis and store: each inconsistency found, repaired, and gone after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import redis
import redis.asyncio as aioredis

from semaflow.doctor import Doctor
from shared import clock, keys
from shared.clock import now_ms
from shared.config import Settings
from shared.index.storage import open_store
from shared.messaging import tasks
from shared.messaging.workqueue import Entry, Priority, WorkQueue
from shared.records import apikeys, catalog, jobs
from shared.records.jobs import Job, JobKind, JobState, Task
from shared.runtime.broker import build_broker

QUEUE = tasks.EMBED_QUEUE


def _entry(entry_id: str, *, age_ms: int = 60_000) -> Entry:
    return Entry(entry_id, "acme", Priority.NORMAL, {"op": "embed_batch", "n": entry_id}, now_ms() - age_ms)


async def _break_everything(client: redis.Redis, aio: aioredis.Redis) -> None:
    queue = WorkQueue(client, QUEUE, lease_ms=1)
    queue.push(_entry("e-orphan"))
    assert queue.claim("m-dead") is not None  # its worker died: the 1 ms lease runs out at once
    queue.push(_entry("e-waiting"))  # its sender died before sending a token
    client.hset(keys.wq_entries(QUEUE), "e-stranded", _entry("e-stranded").encode())  # a partial write
    client.zadd(keys.wq_age(QUEUE, 2), {"e-ghost": 1})
    client.rpush(keys.wq_tenant(QUEUE, 2, "acme"), "e-ghost")
    # A worker fetched a token and died.
    client.sadd(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.w-dead.{QUEUE}", "tok-1")
    client.hset(keys.dramatiq_messages(QUEUE), "tok-1", "{}")
    client.zadd(keys.dramatiq_heartbeats(), {"w-dead": now_ms() - 600_000})
    # A running job, quiet for ten minutes, with nothing in any queue to finish it.
    stamp = clock.now() - timedelta(minutes=10)
    task = Task(queue=QUEUE, arguments={"op": "embed_batch", "batch_id": "b1"})
    await jobs.create(
        aio,
        Job(
            id="job_lost",
            tenant="acme",
            collection="docs",
            kind=JobKind.INGEST,
            state=JobState.RUNNING,
            documents=3,
            created_at=stamp,
            updated_at=stamp,
            task=task,
        ),
    )
    apikeys.store(client, apikeys.new_key(), "acme")
    await catalog.create(aio, "acme", "docs")
    client.set(keys.latest("acme", "docs"), "0000000007-0123456789abcdef")  # no such manifest in the store


async def test_doctor_finds_each_inconsistency_repairs_what_it_can_and_then_finds_only_the_rest(
    settings: Settings, redis_client: redis.Redis, aio_redis: aioredis.Redis
) -> None:
    await _break_everything(redis_client, aio_redis)
    store = open_store(settings)
    found = Doctor(redis_client, store).run()
    assert {(f.check, f.subject) for f in found} == {
        ("orphaned_claim", f"{QUEUE}:e-orphan"),
        ("stranded_entry", f"{QUEUE}:e-stranded"),
        ("ghost_waiting", f"{QUEUE}:e-ghost"),
        ("dead_worker_tokens", f"{QUEUE}:w-dead"),
        ("missing_tokens", QUEUE),
        ("job_without_work", "job:job_lost"),
        ("latest_missing", "acme/docs"),
    }
    assert not any(f.repaired for f in found)
    assert redis_client.hlen(keys.wq_claims(QUEUE)) == 1  # looking changed nothing

    broker = build_broker(settings, settings.require_redis_url())
    try:
        repaired = Doctor(redis_client, store, broker, repair=True).run()
    finally:
        broker.close()
    assert {f.check for f in repaired if not f.repaired} == {"latest_missing"}

    # The orphan is back at the front; the stranded entry and the lost job's work wait; the ghost is gone.
    queue = WorkQueue(redis_client, QUEUE)
    assert redis_client.hlen(keys.wq_claims(QUEUE)) == 0
    waiting = [keys.text(i) for i in redis_client.lrange(keys.wq_tenant(QUEUE, 2, "acme"), 0, -1)]
    assert waiting[0] == "e-orphan" and sorted(waiting) == ["e-orphan", "e-stranded", "e-waiting", "job_lost"]
    assert redis_client.zscore(keys.wq_age(QUEUE, 2), "e-ghost") is None
    # Every waiting entry has a token now: the dead worker's one back on the queue, and new ones.
    assert redis_client.scard(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.w-dead.{QUEUE}") == 0
    assert redis_client.llen(keys.dramatiq_queues(QUEUE)[0]) >= queue.waiting()

    again = Doctor(redis_client, store).run()
    assert [(f.check, f.subject) for f in again] == [("latest_missing", "acme/docs")]


def test_the_command_reports_as_json_and_its_exit_status_says_whether_anything_is_left(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
    argv = [sys.executable, "-m", "semaflow", "doctor", "--redis-url", settings.require_redis_url()]
    argv += ["--data-dir", str(tmp_path)]
    clean = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert "no problems found" in clean.stdout

    queue = WorkQueue(redis_client, QUEUE, lease_ms=1)
    queue.push(_entry("e1", age_ms=0))
    assert queue.claim("m1") is not None
    found = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 1, found.stderr
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(f["check"], f["repaired"]) for f in lines] == [("orphaned_claim", False)]

    fixed = subprocess.run([*argv, "--repair"], env=env, capture_output=True, text=True, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
    assert "2 problem(s), 2 repaired, 0 left" in fixed.stdout  # the claim, then its entry's missing token
    assert redis_client.hlen(keys.wq_claims(QUEUE)) == 0 and queue.waiting() == 1
