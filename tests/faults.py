"""The fault table: each scenario breaks one part of a running system and measures what it got back.

The services run as real processes (as ``semaflow up`` runs them) on a Redis and, for the store
scenario, a SeaweedFS of the scenario's own, so a scenario can kill and restart either on the same
port and data. A scenario returns a :class:`Row`: the end-to-end e2e tests assert on it, and
``bench/faults.py`` runs the same scenarios larger and prints the rows.

Not fixtures: plain classes and functions, like ``tests/peers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from aiohttp import web
from pydantic import SecretStr

from semaflow.redis_server import RedisServer, ephemeral_range, free_port, port_free
from shared import keys
from shared.config import Settings
from shared.index import manifests
from shared.index.storage import open_store
from shared.messaging.events import ScheduleFired
from shared.records import apikeys, catalog, jobs
from tests.streams import events_of

T = TypeVar("T")

TENANT = "acme"
COLLECTION = "docs"
DEADLINE_S = 240.0
# Redis, the object store or a webhook receiver is away this long in a scenario (about 30 s in the
# incident it stands for, scaled down so a test run stays short; the bench passes its own).
OUTAGE_S = 6.0
SEAWEED_GRPC_OFFSET = 10_000  # SeaweedFS serves gRPC on its HTTP port + 10000
# Schedules are off unless a scenario asks for them: compaction would merge away duplicate rows
# before they could be counted.
NO_SCHEDULES = {name: {"enabled": False} for name in ("compaction", "cleanup", "stats", "delivery-sweep", "digest")}


def free_port_pairs(count: int) -> list[int]:
    """``count`` ports ``p`` free now whose ``p + 10000`` (SeaweedFS's gRPC port) is free too, no two
    pairs sharing a port, all below the kernel's ephemeral range (which a service's port-0 listener or
    an outgoing connection could take before the component binds)."""
    chosen: set[int] = set()
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(below=ephemeral_range()[0] - SEAWEED_GRPC_OFFSET)
        pair = {port, port + SEAWEED_GRPC_OFFSET}
        if pair & chosen or not port_free("127.0.0.1", port + SEAWEED_GRPC_OFFSET, reuse=False):
            continue
        chosen |= pair
        ports.append(port)
    return ports


class Failed(AssertionError):
    """A scenario could not reach its end state in time (the message carries the services' logs)."""


class JobEnded(AssertionError):
    """A job of the scenario ended without success (failed or dead)."""


# --- the processes ------------------------------------------------------------------------------


@dataclass
class Weed:
    """A SeaweedFS ``weed mini`` (S3 API) that can be stopped and started again on its ports and data."""

    binary: Path
    workdir: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None
    access_key: str = "semaflow-fault-key"
    secret_key: str = "semaflow-fault-secret"
    bucket: str = "semaflow-faults"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The services' S3 settings for this server."""
        return {
            "SEMAFLOW_S3_BUCKET": self.bucket,
            "SEMAFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "SEMAFLOW_S3_REGION": "us-east-1",
            "SEMAFLOW_S3_ACCESS_KEY_ID": self.access_key,
            "SEMAFLOW_S3_SECRET_ACCESS_KEY": self.secret_key,
        }

    def settings(self) -> Settings:
        return Settings(
            s3_bucket=self.bucket,
            s3_endpoint_url=self.endpoint_url,
            s3_region="us-east-1",
            s3_access_key_id=self.access_key,
            s3_secret_access_key=SecretStr(self.secret_key),
            s3_prefix="",
        )

    def start(self, timeout_s: float = 60.0) -> None:
        """Start it and wait until the bucket can be listed (it is created on the first start)."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]
        for component, port in self.ports.items():
            args += [f"-{component}.port={port}", f"-{component}.port.grpc={port + SEAWEED_GRPC_OFFSET}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env |= {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with (self.workdir / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        store = open_store(self.settings())
        client = store.client  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                names = {b["Name"] for b in client.list_buckets()["Buckets"]}
                if self.bucket not in names:
                    client.create_bucket(Bucket=self.bucket)
                client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                break
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise Failed(f"SeaweedFS did not start: {exc}\n{self.log()}") from exc
                time.sleep(0.2)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@dataclass
class Cluster:
    """Service processes sharing one Redis (restartable on its port and data) and one object store."""

    root: Path
    server: RedisServer
    weed: Weed | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    key: str = ""

    @classmethod
    def create(cls, root: Path, *, weed: Weed | None = None, **env: str) -> Cluster:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        return cls(root, RedisServer.start(root / "redis"), weed, dict(env))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=5, socket_connect_timeout=2)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
        env.update(
            {
                "SEMAFLOW_REDIS_URL": self.server.url,
                "SEMAFLOW_DATA_DIR": str(self.data_dir),
                "SEMAFLOW_PORT": str(self.port),
                "SEMAFLOW_LOG_JSON": "true",
                "SEMAFLOW_WORKER_POLL_MS": "50",
                "SEMAFLOW_WORKER_DEAD_AFTER_S": "3",
                "SEMAFLOW_QUEUE_TOP_UP_INTERVAL_S": "2",
                # A publish cut short by a kill holds the collection until this runs out.
                "SEMAFLOW_COLLECTION_LOCK_TTL_S": "10",
                "SEMAFLOW_EMBED_BATCH_SIZE": "8",
                # torch: a restarted embedder is back at once, without the start-up timing of auto.
                "SEMAFLOW_EMBEDDER_BACKEND": "torch",
                "SEMAFLOW_SHUTDOWN_TIMEOUT_S": "60",
                "SEMAFLOW_RATE_LIMIT_ENABLED": "false",
                "SEMAFLOW_SCHEDULES": json.dumps(NO_SCHEDULES),
                "SEMAFLOW_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
                "SEMAFLOW_INDEX_RECONCILE_INTERVAL_S": "2",
                **(self.weed.env() if self.weed is not None else {}),
                **self.extra_env,
            }
        )
        return env

    def start(self, name: str, service: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``service`` (default: ``name``) as the process ``name``."""
        with (self.root / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", f"services.{service or name}"], env=self.env(), stderr=log)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """``kill -9`` the process ``name``."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def kill_redis(self) -> None:
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(10)
        if self.server.process.stderr is not None:
            self.server.process.stderr.close()

    def start_redis(self) -> None:
        """Start Redis again on its port and data directory, as ``semaflow up`` restarts it."""
        self.server = RedisServer.start(self.server.directory, port=self.server.port)

    def terminate_all(self, timeout_s: float = 60.0) -> dict[str, int]:
        """SIGTERM every service at once and wait; their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def close(self) -> None:
        self.terminate_all()
        self.server.stop()
        if self.weed is not None:
            self.weed.stop()

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-6000:]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in self.procs)

    def alive(self, service: str) -> bool:
        with self.client() as client:
            return any(True for _ in client.scan_iter(match=keys.heartbeat_pattern(service)))

    def boot(self, *services: str) -> Http:
        """Start the gateway and ``services``, wait for them, make a key and the collection; the key's client."""
        for name in ("gateway", *services):
            self.start(name)
        probe = Http(f"http://127.0.0.1:{self.port}")
        workers = [s for s in services if s in ("embedder", "indexer", "notifier")]

        def ready() -> bool:
            try:
                up = probe.call("GET", "/readyz")[0] == 200
            except OSError:
                return False
            return up and all(self.alive(s) for s in workers)

        self.wait("the services", ready)
        self.key = apikeys.new_key()
        with self.client() as client:
            apikeys.store(client, self.key, TENANT)
        http = self.http()
        if http.call("GET", f"/v1/collections/{COLLECTION}")[0] == 404:
            assert http.call("PUT", f"/v1/collections/{COLLECTION}")[0] == 201
        return http

    def http(self) -> Http:
        return Http(f"http://127.0.0.1:{self.port}", {"Authorization": f"Bearer {self.key}"})

    def wait(
        self, what: str, check: Callable[[], T | None], timeout_s: float = DEADLINE_S, interval_s: float = 0.1
    ) -> T:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                found = check()
                if found:
                    return found
            time.sleep(interval_s)
        raise Failed(f"timed out waiting for {what}\n{self.logs()}")


@contextlib.contextmanager
def cluster(root: Path, *, weed: Weed | None = None, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A cluster on a Redis of its own; every process it started is stopped at the end."""
    running = Cluster.create(root, weed=weed, **(env or {}))
    try:
        yield running
    finally:
        running.close()


class Http:
    """A minimal JSON-over-HTTP client (urllib: nothing beyond the standard library)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout_s: float = 30
    ) -> tuple[int, Any]:
        """Status and decoded body; raises ``OSError`` when no answer came (refused, reset, timed out)."""
        data = None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")


# --- the client's side: ingest with retries, searches ---------------------------------------------


def documents(batch: int, size: int) -> list[dict[str, Any]]:
    return [
        {"id": f"b{batch}-d{i}", "text": f"batch {batch} document {i} on subject {i * 7 % 13}"} for i in range(size)
    ]


@dataclass
class Ingest:
    """A client sending batches, each with an ``Idempotency-Key`` of its own, retrying until each is accepted.

    It retries what got no answer (refused, reset), a 503 (Redis or the store away) and a 409 (the
    same key still held by a request a killed gateway never finished), as a careful client does.
    """

    http: Http
    batches: int
    size: int
    accepted: dict[int, str] = field(default_factory=dict)  # batch -> job id
    refused: int = 0  # answers that were not a 202 (then retried)
    unanswered: int = 0  # requests that got no answer (then retried)
    statuses: dict[int, int] = field(default_factory=dict)
    pause_s: float = 0.0
    deadline_s: float = DEADLINE_S
    error: BaseException | None = None  # what stopped the client's thread, if anything

    def send(self, batch: int) -> None:
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            try:
                status, body = self.http.call(
                    "POST",
                    f"/v1/collections/{COLLECTION}/documents",
                    {"documents": documents(batch, self.size)},
                    headers={"Idempotency-Key": f"batch-{batch}"},
                    timeout_s=10,
                )
            except OSError:
                self.unanswered += 1
                time.sleep(0.2)
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 202:
                self.accepted[batch] = body["job_id"]
                return
            assert status in (409, 503), (status, body)
            self.refused += 1
            time.sleep(0.2)
        raise Failed(f"batch {batch} never accepted: {self.statuses}")

    def run(self) -> None:
        for batch in range(self.batches):
            self.send(batch)
            if self.pause_s:
                time.sleep(self.pause_s)

    def in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self._guarded, daemon=True)
        thread.start()
        return thread

    def _guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported by the scenario that joins the thread
            self.error = exc

    def expected(self) -> set[str]:
        return {f"b{b}-d{i}" for b in self.accepted for i in range(self.size)}


def job_states(client: redis.Redis, job_ids: list[str]) -> list[jobs.Job | None]:
    return [jobs.get(client, j) for j in job_ids]


@dataclass
class Progress:
    """Watches the jobs of an ingest from a thread of its own (every 0.1 s, Redis outages included): when
    each first succeeded, so recovery after a fault can be timed.
    """

    cluster: Cluster
    ingest: Ingest
    succeeded_at: dict[str, float] = field(default_factory=dict)
    error: AssertionError | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll():
                    return
            except (redis.RedisError, OSError):
                pass  # Redis away: watched again once it is back
            except AssertionError as exc:
                self.error = exc
                return
            self._stop.wait(0.1)

    def poll(self) -> bool:
        """Record new successes; True once every batch is accepted and every job succeeded."""
        if self.error is not None:
            raise self.error
        ids = list(self.ingest.accepted.values())
        with self.cluster.client() as client:
            for job_id, job in zip(ids, job_states(client, ids), strict=True):
                if job is None:
                    continue
                if job.state in (jobs.JobState.FAILED, jobs.JobState.DEAD):
                    raise JobEnded(f"job {job_id} is {job.state.value}: {job.error}")
                if job.state is jobs.JobState.SUCCEEDED:
                    self.succeeded_at.setdefault(job_id, time.monotonic())
        return len(self.ingest.accepted) == self.ingest.batches and len(self.succeeded_at) == len(ids)

    def stop(self) -> None:
        self._stop.set()

    def first_after(self, moment: float) -> float | None:
        after = [t for t in self.succeeded_at.values() if t > moment]
        return min(after) - moment if after else None

    def done_after(self, moment: float) -> float:
        return max(self.succeeded_at.values()) - moment

    def wait_done(self, timeout_s: float = DEADLINE_S) -> None:
        try:
            self.cluster.wait("every job to succeed", lambda: self.poll() or None, timeout_s)
        finally:
            self.stop()

    def wait_some(self, count: int = 1) -> None:
        self.cluster.wait(
            f"{count} job(s) to succeed", lambda: (self.poll() or True) and len(self.succeeded_at) >= count
        )


# --- what the store holds at the end -----------------------------------------------------------


@dataclass
class Tally:
    """Every accepted document against the live index: how many are live, lost, or doubled."""

    accepted: int
    indexed: int
    lost: int
    duplicates: int


def tally(cluster: Cluster, expected: set[str]) -> Tally:
    """Count the accepted documents in the live manifest and the document map."""
    settings = cluster.weed.settings() if cluster.weed is not None else Settings(data_dir=cluster.data_dir)
    store = open_store(settings)
    with cluster.client() as client:
        record = catalog.get(client, TENANT, COLLECTION)
        version = client.get(keys.latest(TENANT, COLLECTION))
        live = {keys.text(k) for k in client.hkeys(keys.docmap(TENANT, COLLECTION))}
    assert record is not None and version is not None
    manifest = manifests.read(store, record.ref, keys.text(version))
    rows = sum(seg.vectors for seg in manifest.segments)
    # A row not live is a copy a redelivery wrote twice (nothing here deletes or replaces a document).
    duplicates = rows - manifest.documents + max(0, manifest.documents - len(live))
    return Tally(len(expected), len(live & expected), len(expected - live), duplicates + len(live - expected))


@dataclass
class Row:
    """One line of the fault table."""

    scenario: str
    accepted: int = 0
    indexed: int = 0
    lost: int = 0
    duplicates: int = 0
    recover_s: float | None = None  # from the fault (or its end) to the first progress after it
    done_s: float | None = None  # from the fault (or its end) to everything done
    searches: int = 0
    failed_searches: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def counts(self, found: Tally) -> Row:
        self.accepted, self.indexed, self.lost, self.duplicates = (
            found.accepted,
            found.indexed,
            found.lost,
            found.duplicates,
        )
        return self


def settle(cluster: Cluster) -> dict[str, Any]:
    """Wait until no work is claimed or queued any more; what ``/v1/queues`` says then."""

    def drained() -> dict[str, Any] | None:
        status, body = cluster.http().call("GET", "/v1/queues")
        if status != 200:
            return None
        queues: dict[str, Any] = body["queues"]
        with cluster.client() as client:
            claims = sum(client.hlen(keys.wq_claims(q)) for q in ("embed", "index"))
        busy = any(queues[q]["in_flight"] or any(queues[q]["depth"].values()) for q in ("embed", "index"))
        return None if claims or busy else queues

    return cluster.wait("the queues to drain", drained, timeout_s=60)


def finish_ingest(cluster: Cluster, ingest: Ingest, thread: threading.Thread, progress: Progress) -> None:
    """Wait for the client's thread and for every job it got accepted."""
    progress.wait_done()
    thread.join(30)
    if ingest.error is not None:
        raise ingest.error
    progress.wait_done()


# --- the scenarios -------------------------------------------------------------------------------


def claimed(client: redis.Redis, queue: str) -> set[str]:
    """The job ids whose work on ``queue`` a worker holds now."""
    return {keys.text(e) for e in client.hvals(keys.wq_claims(queue))}


def kill_worker(root: Path, service: str, batches: int = 6, size: int = 48) -> Row:
    """kill -9 of the embedder or the indexer while it holds work; restarted as the supervisor would.

    ``recover_s`` runs from the kill to the success of the last job whose work the killed worker held.
    """
    queue = {"embedder": "embed", "indexer": "index"}[service]
    with cluster(root) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, batches, size)
        ingest.run()
        progress = Progress(c, ingest)
        ids = list(ingest.accepted.values())

        with c.client() as client:
            looked = [0]

            def holding() -> set[str]:
                looked[0] += 1
                if looked[0] % 100 == 0 and progress.poll():
                    raise Failed(f"every job succeeded before the {service} was seen holding work")
                return claimed(client, queue)

            # Watched closely: the indexer holds a small batch for a fraction of a second.
            held = c.wait(f"the {service} holding work", holding, interval_s=0.002)
        c.kill(service)
        killed = time.monotonic()
        c.start(service)
        progress.wait_done()
        row = Row(f"kill -9 {service}", done_s=progress.done_after(killed))
        row.recover_s = max(progress.succeeded_at[j] for j in held) - killed
        with c.client() as client:
            found = {j: job for j in ids if (job := jobs.get(client, j)) is not None}
        row.notes["held_attempts"] = sorted(found[j].attempts for j in held)
        row.notes["attempts"] = sorted(job.attempts for job in found.values())
        row.notes["queues"] = settle(c)
        return row.counts(tally(c, ingest.expected()))


def kill_gateway(root: Path, batches: int = 30, size: int = 8) -> Row:
    """kill -9 of the gateway while a client sends batches; its requests are retried with their keys."""
    with cluster(root) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, batches, size)
        thread = ingest.in_background()
        progress = Progress(c, ingest)
        c.wait("some batches accepted", lambda: len(ingest.accepted) >= max(1, batches // 3))
        # Killed while a request is past making its job and not yet answered (the client has no job id):
        # watched in a tight loop, the window is milliseconds wide.
        with c.client() as client:
            while len(client.keys(keys.job("*"))) <= len(ingest.accepted):
                if not thread.is_alive():
                    raise RuntimeError("every batch was answered before the gateway could be killed mid-request")
        c.kill("gateway")
        killed = time.monotonic()
        c.start("gateway")
        c.wait("the gateway", lambda: Http(http.base).call("GET", "/readyz")[0] == 200)
        finish_ingest(c, ingest, thread, progress)
        row = Row("kill -9 gateway", recover_s=progress.first_after(killed), done_s=progress.done_after(killed))
        row.notes["unanswered"] = ingest.unanswered
        row.notes["statuses"] = ingest.statuses
        row.notes["jobs"] = _all_jobs(c)
        row.notes["queues"] = settle(c)
        return row.counts(tally(c, ingest.expected()))


def _all_jobs(c: Cluster) -> dict[str, str]:
    """Every job record and its state (a request run twice would have made two)."""
    with c.client() as client:
        found = [keys.text(k).removeprefix(keys.job("")) for k in client.scan_iter(match=keys.job("*"), count=500)]
        return {j: job.state.value for j in found if (job := jobs.get(client, j)) is not None}


def kill_redis(root: Path, batches: int = 8, size: int = 24, down_s: float = 1.0) -> Row:
    """kill -9 of Redis during ingest, restarted on its port and data after ``down_s``."""
    with cluster(root) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, batches, size, pause_s=0.3)
        thread = ingest.in_background()
        progress = Progress(c, ingest)
        c.wait("a batch at work", lambda: len(ingest.accepted) >= 2)
        c.kill_redis()
        time.sleep(down_s)
        c.start_redis()
        back = time.monotonic()
        finish_ingest(c, ingest, thread, progress)
        row = Row("kill -9 redis", recover_s=progress.first_after(back), done_s=progress.done_after(back))
        row.notes["statuses"] = ingest.statuses
        row.notes["queues"] = settle(c)
        return row.counts(tally(c, ingest.expected()))


def terminate_stack(root: Path, batches: int = 8, size: int = 48) -> Row:
    """SIGTERM of every service and then Redis (as ``semaflow up`` stops), mid-ingest; then everything again."""
    with cluster(root) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, batches, size)
        ingest.run()
        progress = Progress(c, ingest)
        progress.wait_some(1)
        codes = c.terminate_all()
        c.server.stop()
        c.start_redis()
        c.procs.clear()
        c.boot("indexer", "embedder")
        back = time.monotonic()
        progress.wait_done()
        row = Row("SIGTERM stack, restart", recover_s=progress.first_after(back), done_s=progress.done_after(back))
        row.notes["exit_codes"] = codes
        row.notes["queues"] = settle(c)
        return row.counts(tally(c, ingest.expected()))


def store_outage(
    root: Path,
    weed: Weed,
    batches: int = 8,
    size: int = 24,
    down_s: float = OUTAGE_S,
    env: dict[str, str] | None = None,
) -> Row:
    """The object store (SeaweedFS) stopped for ``down_s`` during ingest, then started on its ports and data."""
    weed.start()
    with cluster(root, weed=weed, env=env) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, batches, size, pause_s=0.2)
        thread = ingest.in_background()
        progress = Progress(c, ingest)
        c.wait("a batch at work", lambda: len(ingest.accepted) >= 2)
        weed.stop()
        time.sleep(down_s)
        weed.start()
        back = time.monotonic()
        finish_ingest(c, ingest, thread, progress)
        row = Row("object store down", recover_s=progress.first_after(back), done_s=progress.done_after(back))
        row.notes["statuses"] = ingest.statuses
        row.notes["queues"] = settle(c)
        return row.counts(tally(c, ingest.expected()))


def redis_outage_search(root: Path, down_s: float = OUTAGE_S, clients: int = 4) -> Row:
    """Redis down for ``down_s`` while clients search with a key the gateway verified before."""
    with cluster(root) as c:
        http = c.boot("indexer", "embedder")
        ingest = Ingest(http, 2, 24)
        ingest.run()
        Progress(c, ingest).wait_done()
        c.wait("the index loaded", lambda: _search(http, 0) == 200)
        stop = threading.Event()
        results: list[tuple[float, int]] = []
        lock = threading.Lock()

        def load(n: int) -> None:
            i = n
            while not stop.is_set():
                try:
                    status = _search(http, i)
                except OSError:
                    status = 0
                with lock:
                    results.append((time.monotonic(), status))
                i += clients

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        c.kill_redis()
        down = time.monotonic()
        time.sleep(down_s)
        c.start_redis()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(30)
        during = [s for t, s in results if down <= t]
        row = Row("redis down, searches", searches=len(results), failed_searches=sum(s != 200 for _, s in results))
        row.notes["searches_during_outage"] = len(during)
        row.notes["statuses"] = sorted({s for _, s in results})
        return row.counts(tally(c, ingest.expected()))


def _search(http: Http, n: int) -> int:
    words = ("batch", "document", "subject", "river", "orbit", "ledger", "copper", "meadow")
    query = f"{words[n % len(words)]} {n % 13} {words[(n // 3) % len(words)]}"
    return http.call("POST", f"/v1/collections/{COLLECTION}/search", {"query": query, "k": 5}, timeout_s=10)[0]


# --- webhooks ------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver (aiohttp) on a thread of its own; it can go away and come back on its port."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.hits: list[tuple[float, str, dict[str, Any]]] = []  # (when, webhook-id, event)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        self.hits.append((time.monotonic(), request.headers["webhook-id"], event))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def event_ids(self) -> set[str]:
        return {str(e["id"]) for _, _, e in self.hits}


def _subscribe(http: Http, receiver: Receiver) -> str:
    status, body = http.call("POST", "/v1/webhooks", {"url": receiver.url, "event_types": ["job.succeeded"]})
    assert status == 201, body
    return str(body["id"])


def _deliveries(http: Http, endpoint: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = f"/v1/webhooks/{endpoint}/deliveries?limit=100" + (f"&cursor={cursor}" if cursor else "")
        status, page = http.call("GET", path)
        assert status == 200, page
        found += page["deliveries"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


@dataclass
class Deliveries:
    """What a receiver got against what the delivery log says."""

    expected: set[str]  # job ids whose job.succeeded had to be delivered
    received: set[str]  # job ids whose event reached the receiver
    log_succeeded: int  # deliveries the log says succeeded
    log_total: int
    hits: int  # requests the receiver got (redeliveries included)
    unknown: set[str]  # events the receiver got that the delivery log does not know

    @property
    def consistent(self) -> bool:
        """Every expected event arrived, and the log knows every arrival and says each delivery succeeded."""
        return not self.missing and not self.unknown and self.log_succeeded == self.log_total == len(self.expected)

    @property
    def missing(self) -> set[str]:
        return self.expected - self.received


def _delivery_tally(http: Http, endpoint: str, receiver: Receiver, job_ids: set[str]) -> Deliveries:
    log = _deliveries(http, endpoint)
    received = {str(e["data"]["job_id"]) for _, _, e in receiver.hits if e["type"] == "job.succeeded"}
    unknown = receiver.event_ids() - {d["event_id"] for d in log}
    return Deliveries(
        job_ids, received, sum(d["state"] == "succeeded" for d in log), len(log), len(receiver.hits), unknown
    )


def _webhook_env() -> dict[str, str]:
    return {
        "SEMAFLOW_WEBHOOK_TIMEOUT_S": "2",
        "SEMAFLOW_WEBHOOK_RETRY_SCHEDULE": "0.5,1,2",
        "SEMAFLOW_WEBHOOK_MAX_ATTEMPTS": "30",
    }


def _delivered(http: Http, endpoint: str, receiver: Receiver, job_ids: set[str]) -> Deliveries | None:
    found = _delivery_tally(http, endpoint, receiver, job_ids)
    return found if found.consistent else None


def kill_notifier(root: Path, batches: int = 6, size: int = 8) -> Row:
    """kill -9 of the notifier while its attempts are in flight (a slow receiver); restarted at once."""
    receiver = Receiver(delay_s=1.0)
    receiver.start()
    try:
        with cluster(root, env=_webhook_env()) as c:
            http = c.boot("indexer", "embedder", "notifier")
            endpoint = _subscribe(http, receiver)
            ingest = Ingest(http, batches, size)
            ingest.run()
            progress = Progress(c, ingest)
            c.wait("a delivery under way", lambda: receiver.hits)
            c.kill("notifier")
            killed = time.monotonic()
            c.start("notifier")
            progress.wait_done()
            jobs_ = set(ingest.accepted.values())
            found = c.wait("every delivery", lambda: _delivered(http, endpoint, receiver, jobs_), timeout_s=DEADLINE_S)
            last = max(t for t, _, _ in receiver.hits)
            row = Row("kill -9 notifier", done_s=last - killed)
            after = [t for t, _, _ in receiver.hits if t > killed]
            row.recover_s = min(after) - killed if after else None
            row.notes["deliveries"] = found
            return row.counts(tally(c, ingest.expected()))
    finally:
        receiver.close()


def receiver_outage(root: Path, batches: int = 6, size: int = 8, down_s: float = OUTAGE_S) -> Row:
    """The webhook receiver away for ``down_s`` while events happen; retried deliveries all arrive after."""
    receiver = Receiver()
    try:
        with cluster(root, env=_webhook_env()) as c:
            http = c.boot("indexer", "embedder", "notifier")
            endpoint = _subscribe(http, receiver)  # nothing listens yet: the first attempts are refused
            ingest = Ingest(http, batches, size)
            ingest.run()
            progress = Progress(c, ingest)
            progress.wait_done()
            time.sleep(max(0.0, down_s - (time.monotonic() - min(progress.succeeded_at.values()))))
            failed = sum(d["attempt_count"] > 0 and d["state"] != "succeeded" for d in _deliveries(http, endpoint))
            receiver.start()
            back = time.monotonic()
            jobs_ = set(ingest.accepted.values())
            found = c.wait("every delivery", lambda: _delivered(http, endpoint, receiver, jobs_))
            row = Row("webhook receiver down", done_s=max(t for t, _, _ in receiver.hits) - back)
            row.recover_s = min(t for t, _, _ in receiver.hits) - back
            row.notes["deliveries"] = found
            row.notes["failed_before"] = failed
            return row.counts(tally(c, ingest.expected()))
    finally:
        receiver.close()


def kill_scheduler_leader(root: Path, batches: int = 4, size: int = 24) -> Row:
    """Two schedulers firing a per-second schedule during ingest; kill -9 of the leader."""
    schedules: dict[str, Any] = {
        **NO_SCHEDULES,
        "tick": {"cron": "* * * * * *", "action": "event", "missed": "run_once"},
    }
    env = {
        "SEMAFLOW_SCHEDULES": json.dumps(schedules),
        "SEMAFLOW_SCHEDULER_LEASE_TTL_S": "3",
        "SEMAFLOW_SCHEDULER_POLL_S": "0.2",
    }
    with cluster(root, env=env) as c:
        http = c.boot("indexer", "embedder")
        for n in range(2):
            c.start(f"scheduler-{n}", "scheduler")

        def fired() -> list[ScheduleFired]:
            with c.client() as client:
                return [f for f in events_of(client, ScheduleFired) if f.schedule == "tick"]

        def lease() -> tuple[int, int] | None:
            with c.client() as client:
                raw = client.get(keys.scheduler_lease())
            if raw is None:
                return None
            owner, token = keys.text(raw).rsplit(" ", 1)
            return int(owner.split(":")[1]), int(token)

        c.wait("ticks", lambda: len(fired()) >= 3)
        ingest = Ingest(http, batches, size, pause_s=0.5)
        thread = ingest.in_background()
        progress = Progress(c, ingest)
        pid, token = c.wait("a leader", lease)
        leader = next(name for name, p in c.procs.items() if p.pid == pid)
        c.kill(leader)
        killed = time.monotonic()
        before = len(fired())
        c.wait("another leader", lambda: (found := lease()) is not None and found[1] > token)
        c.wait("a tick from the new leader", lambda: any(f.fencing_token > token for f in fired()))
        row = Row("kill -9 scheduler leader", recover_s=time.monotonic() - killed)
        c.wait("ticks from the new leader", lambda: len(fired()) >= before + 3)
        finish_ingest(c, ingest, thread, progress)
        row.done_s = progress.done_after(killed)
        ticks = [f.scheduled_for for f in fired()]
        row.notes["ticks"] = len(ticks)
        row.notes["ticks_twice"] = len(ticks) - len(set(ticks))
        row.notes["catch_up"] = [f.catch_up for f in fired() if f.fencing_token > token][:1]
        return row.counts(tally(c, ingest.expected()))
