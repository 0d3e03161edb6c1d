"""Crash safety with real worker processes on a real Redis: kill -9 and SIGTERM in mid-batch.

Every service runs as its own process, as in ``semaflow up``, but started by the test so it can
kill one at a chosen moment and start its replacement. Afterwards every document must be indexed
exactly once: the live manifest holds each document in exactly one live row, and no more rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from semaflow.redis_server import RedisServer, free_port
from shared import keys
from shared.index import manifests
from shared.index.storage import LocalStore
from shared.records import apikeys, catalog

BATCHES = 4
DOCS_PER_BATCH = 48


@dataclass
class Services:
    """Service processes sharing one Redis and one data directory."""

    redis_url: str
    data_dir: Path
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
        env.update(
            {
                "SEMAFLOW_REDIS_URL": self.redis_url,
                "SEMAFLOW_DATA_DIR": str(self.data_dir),
                "SEMAFLOW_PORT": str(self.port),
                "SEMAFLOW_LOG_JSON": "true",
                "SEMAFLOW_WORKER_POLL_MS": "50",
                "SEMAFLOW_WORKER_DEAD_AFTER_S": "3",
                "SEMAFLOW_QUEUE_TOP_UP_INTERVAL_S": "2",
                # An indexer killed mid-publish leaves the collection locked until this runs out (its
                # replacement's first publish waits for it): far above a publish of these small batches.
                "SEMAFLOW_COLLECTION_LOCK_TTL_S": "10",
                "SEMAFLOW_EMBED_BATCH_SIZE": "8",
                # torch: a restarted embedder is back at once, without the start-up timing of auto.
                "SEMAFLOW_EMBEDDER_BACKEND": "torch",
                "SEMAFLOW_SHUTDOWN_TIMEOUT_S": "60",
                # The test polls job states far faster than the default rate limits allow.
                "SEMAFLOW_RATE_LIMIT_ENABLED": "false",
            }
        )
        return env

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=self.env(), stderr=log)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-8000:]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def services(redis_server: RedisServer, tmp_path: Path) -> Iterator[Services]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    running = Services(redis_server.url, tmp_path / "data", tmp_path)
    running.data_dir.mkdir()
    yield running
    running.stop_all()


def _wait(what: str, check: Any, timeout_s: float = 180.0, services: Services | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    logs = "" if services is None else "\n".join(f"--- {n}\n{services.log(n)}" for n in services.procs)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


class Http:
    """A minimal JSON-over-HTTP client (urllib: nothing beyond the standard library)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _alive(client: redis.Redis, service: str) -> bool:
    return any(True for _ in client.scan_iter(match=keys.heartbeat_pattern(service)))


def _boot(services: Services, client: redis.Redis) -> Http:
    for name in ("gateway", "indexer", "embedder"):
        services.start(name)
    probe = Http(f"http://127.0.0.1:{services.port}")

    def ready() -> bool:
        try:
            up = probe.call("GET", "/readyz")[0] == 200
        except OSError:
            return False
        return up and _alive(client, "embedder") and _alive(client, "indexer")

    _wait("the services", ready, services=services)
    key = apikeys.new_key()
    apikeys.store(client, key, "acme")
    http = Http(probe.base, {"Authorization": f"Bearer {key}"})
    assert http.call("PUT", "/v1/collections/docs")[0] == 201
    return http


def _ingest(http: Http) -> list[str]:
    job_ids = []
    for b in range(BATCHES):
        docs = [
            {"id": f"b{b}-d{i}", "text": f"batch {b} document {i} on subject {i * 7 % 13}"}
            for i in range(DOCS_PER_BATCH)
        ]
        status, body = http.call("POST", "/v1/collections/docs/documents", {"documents": docs})
        assert status == 202, body
        job_ids.append(body["job_id"])
    return job_ids


def _jobs(http: Http, job_ids: list[str]) -> list[dict[str, Any]]:
    return [http.call("GET", f"/v1/jobs/{j}")[1] for j in job_ids]


def _all_succeeded(http: Http, job_ids: list[str]) -> list[dict[str, Any]] | None:
    found = _jobs(http, job_ids)
    return found if all(j["state"] == "succeeded" for j in found) else None


def _assert_indexed_exactly_once(client: redis.Redis, services: Services) -> None:
    record = catalog.get(client, "acme", "docs")
    assert record is not None
    version = client.get(keys.latest("acme", "docs"))
    assert version is not None
    manifest = manifests.read(LocalStore(services.data_dir / "objects"), record.ref, keys.text(version))
    total = BATCHES * DOCS_PER_BATCH
    assert manifest.documents == total  # every document live once
    assert sum(seg.vectors for seg in manifest.segments) == total  # and no duplicate rows at all
    assert client.hlen(keys.docmap("acme", "docs")) == total


def test_kill_9_of_workers_mid_batch_loses_nothing_and_doubles_nothing(
    services: Services, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    http = _boot(services, client)
    job_ids = _ingest(http)

    _wait("a batch being embedded", lambda: any(j["state"] == "running" for j in _jobs(http, job_ids)))
    services.procs["embedder"].send_signal(signal.SIGKILL)
    services.procs["embedder"].wait(10)
    services.start("embedder")  # as the supervisor would
    # The indexer dies too, once it has work: the first embedded batch may be mid-publish.
    # (``embedded`` advances chunk by chunk: a whole batch's count means its embedding is done.)
    _wait(
        "an embedded batch",
        lambda: any(j["embedded"] == DOCS_PER_BATCH for j in _jobs(http, job_ids)),
        services=services,
    )
    services.procs["indexer"].send_signal(signal.SIGKILL)
    services.procs["indexer"].wait(10)
    services.start("indexer")

    done = _wait("every job to succeed", lambda: _all_succeeded(http, job_ids), services=services)
    assert all(j["indexed"] == DOCS_PER_BATCH for j in done)
    _assert_indexed_exactly_once(client, services)
    client.close()


def test_sigterm_mid_batch_finishes_or_hands_back_the_work(services: Services, redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    http = _boot(services, client)
    job_ids = _ingest(http)

    _wait("a batch being embedded", lambda: any(j["state"] == "running" for j in _jobs(http, job_ids)))
    embedder = services.procs["embedder"]
    started = time.monotonic()
    embedder.send_signal(signal.SIGTERM)
    assert embedder.wait(60) == 0, services.log("embedder")
    stopped_in = time.monotonic() - started
    assert stopped_in < 60
    assert not _alive(client, "embedder")  # its heartbeat is removed on the way out
    assert "worker.stopped" in services.log("embedder")

    services.start("embedder")
    done = _wait("every job to succeed", lambda: _all_succeeded(http, job_ids), services=services)
    attempts = sorted(j["attempts"] for j in done)
    assert attempts[:-1] == [1] * (BATCHES - 1)  # only the batch in flight at SIGTERM may have run twice
    _assert_indexed_exactly_once(client, services)
    client.close()


def _claimed(client: redis.Redis, queue: str) -> set[str]:
    return {keys.text(e) for e in client.hvals(keys.wq_claims(queue))}


def _kill_embedder_holding_work(services: Services, client: redis.Redis) -> tuple[Http, list[str], set[str]]:
    """Boot, ingest, and kill -9 the embedder once it holds a claim: the client, the jobs, the claimed ones.

    The claims are read once the embedder is dead: working on two jobs at once, it may have taken a second
    between the first claim seen and the kill."""
    http = _boot(services, client)
    job_ids = _ingest(http)
    _wait("a batch claimed by the embedder", lambda: _claimed(client, "embed"), services=services)
    services.procs["embedder"].send_signal(signal.SIGKILL)
    services.procs["embedder"].wait(10)
    held = _claimed(client, "embed")
    assert held, "the claims vanished with the embedder before anything took them back"
    return http, job_ids, held


def test_the_claim_of_a_killed_worker_is_taken_back_within_its_lease_and_run_once(
    services: Services, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    http, job_ids, held = _kill_embedder_holding_work(services, client)
    killed = time.monotonic()
    # Nothing renews the dead worker's lease: the indexer's recovery takes the claim back (3 s lease,
    # checked every second), long before Dramatiq's occasional maintenance would.
    _wait("the claim taken back", lambda: not (_claimed(client, "embed") & held), timeout_s=20, services=services)
    assert time.monotonic() - killed < 3 + 1 + 3
    assert "queue.work_reclaimed" in services.log("indexer")
    assert held <= {keys.text(e) for e in client.lrange(keys.wq_tenant("embed", 2, "acme"), 0, len(held) - 1)}

    services.start("embedder")  # as the supervisor would
    done = _wait("every job to succeed", lambda: _all_succeeded(http, job_ids), services=services)
    assert {j["id"]: j["attempts"] for j in done if j["id"] in held} == dict.fromkeys(held, 2)
    _assert_indexed_exactly_once(client, services)
    client.close()


def test_work_whose_token_message_was_lost_is_reclaimed_and_its_tokens_restored(
    services: Services, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    http, job_ids, _ = _kill_embedder_holding_work(services, client)
    # Redis comes back without the embed queue's Dramatiq messages (as after losing its last writes):
    # the claim's token and the waiting entries' tokens are gone; the entries and the claim remain.
    doomed: list[str | bytes] = [*keys.dramatiq_queues("embed"), keys.dramatiq_messages("embed")]
    for pattern in keys.dramatiq_acks("embed"):
        doomed += client.keys(pattern)
    client.delete(*doomed)
    services.start("embedder")

    done = _wait("every job to succeed", lambda: _all_succeeded(http, job_ids), services=services)
    assert all(j["indexed"] == DOCS_PER_BATCH for j in done)
    assert client.hlen(keys.wq_claims("embed")) == 0 and client.hlen(keys.wq_entries("embed")) == 0
    _assert_indexed_exactly_once(client, services)
    client.close()


def test_a_job_whose_worker_died_can_be_cancelled_and_retried_and_then_runs_once(
    services: Services, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    http, job_ids, held = _kill_embedder_holding_work(services, client)
    lost = sorted(held)[0]
    status, job = http.call("POST", f"/v1/jobs/{lost}/cancel")
    assert (status, job["state"]) == (200, "cancelled"), job
    status, job = http.call("POST", f"/v1/jobs/{lost}/retry")
    assert (status, job["state"]) == (202, "queued"), job

    services.start("embedder")
    done = _wait("every job to succeed", lambda: _all_succeeded(http, job_ids), services=services)
    assert all(j["indexed"] == DOCS_PER_BATCH for j in done)
    assert client.hlen(keys.wq_claims("embed")) == 0 and client.hlen(keys.wq_claims("index")) == 0
    _assert_indexed_exactly_once(client, services)
    client.close()
