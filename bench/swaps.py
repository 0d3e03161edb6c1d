"""Hot-swap benchmark: gateway memory after a restart, CPU per swap, ready time, and search latency
while batches keep publishing, against the same figures idle (and, optionally, an earlier revision).

Run by hand (not pytest), alone on the machine, briefly::

    .venv/bin/python bench/swaps.py                                  # 100,000 vectors
    .venv/bin/python bench/swaps.py --reference-rev 149bb9e          # also the code of that revision
    .venv/bin/python bench/swaps.py --vectors 20000 --publish 5      # a quick look

No model and no embedder: the benchmark starts its own ``redis-server`` on a free port, builds the
collection with the indexer's own code (``Publisher.add_batch`` over stored batches of random unit
vectors, ``--batch`` documents each: one flat segment per batch, as ingest leaves them before
compaction) and announces every version with ``index.published`` as the indexer does. Each gateway
under test (``python -m services.gateway`` of this tree, and of ``--reference-rev`` exported with
``git archive``) gets a collection of its own, built alike, in its own Redis database and store.

Per gateway:

* ready: spawn until ``/readyz`` is 200, with an empty segment cache (cold) and again with the
  cache filled (warm restart; the reference has no cache, so both of its starts are alike);
* memory after the warm restart: ``VmRSS``, split into ``RssAnon`` (private to the process) and
  ``RssFile`` (file pages: the mapped segments, shared with every process on the host that maps
  them), read once idle and again after the searches touched every segment, beside the same
  gateway's with no collection at all (it imports the query model's libraries in the background
  either way: no model files are given, so none is loaded);
* CPU per swap: ``--publish`` batches, one at a time, each announced and waited for (the gateway's
  ``semaflow_index_swaps_total`` moves); the gateway's user+system CPU over them / swaps;
* search p50 idle (``--searches`` vector searches, k=10, one at a time) and while a thread per
  collection publishes ``--busy-publish`` batches of ``--busy-batch`` documents back to back, as
  fast as the indexer's code can (each search reads ``LATEST`` and may wait for a version to load).
  In both, the gateways take turns, search by search, so that the noise of a shared machine falls
  on each alike; the gateway's CPU per search is printed beside the latency. While publishing, each
  search is followed by the same search sent with ``Cache-Control: max-stale``, which this tree
  answers from the loaded version at once (a revision before it ignores the header: the same search).

Ratios are printed only against a reference that is a floor of the measured figure (idle search
for the search while publishing; the bare Python import for the ready time): if the floor came out
slower than the figure, the run was too noisy and the ratio is refused.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import numpy as np
import redis
from common import log, percentile, table

from semaflow.redis_server import free_port

sys.path.insert(0, str(common.REPO))

from services.indexer.publishing import Publisher, announce
from shared import keys
from shared.index.documents import Document, encode_batch, encode_vectors, normalize, put_batch
from shared.index.storage import LocalStore
from shared.records import apikeys
from shared.records.apikeys import Role
from shared.records.catalog import Collection

TENANT, NAME = "bench", "swaps"


# --- fixtures: redis, a collection, publishing ---------------------------------------------------


def start_redis(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


class BenchCollection:
    """One collection in its own Redis database and store, filled and published with the indexer's code."""

    def __init__(self, port: int, db: int, store_dir: Path) -> None:
        self.redis_url = f"redis://127.0.0.1:{port}/{db}"
        self.client = redis.Redis.from_url(self.redis_url)
        self.client.flushdb()
        self.store_dir = store_dir
        self.store = LocalStore(store_dir)
        self.record = Collection(tenant=TENANT, name=NAME, id="c1", created_at=datetime.now(UTC))
        self.client.hset(keys.collections(TENANT), NAME, self.record.model_dump_json())
        self.client.sadd(keys.tenants(), TENANT)
        self.key = apikeys.new_key()
        apikeys.store(self.client, self.key, TENANT, Role.WRITER)
        self.publisher = Publisher(self.client, self.store)
        self.batches = 0

    def publish(self, vectors: np.ndarray[Any, Any]) -> str:
        """One batch: stored, indexed as one segment, published and announced."""
        batch = f"b{self.batches:05d}"
        self.batches += 1
        ids = [f"{batch}-{i}" for i in range(len(vectors))]
        docs = [Document(id=i, text="", metadata={"batch": batch}) for i in ids]
        put_batch(self.store, self.record.ref, batch, encode_batch(docs))
        self.store.put(self.record.ref.vectors_key(batch), encode_vectors(vectors))
        out = self.publisher.add_batch(self.record, batch, write_seq=self.batches)
        assert out.manifest is not None and out.version is not None
        announce(
            self.client, TENANT, NAME, out.version, out.manifest.documents, len(out.manifest.segments), maxlen=10_000
        )
        return out.version


# --- a gateway process -------------------------------------------------------------------------


class Gateway:
    def __init__(self, tree: Path, coll: BenchCollection, data_dir: Path) -> None:
        self.tree, self.coll, self.data_dir = tree, coll, data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None

    def start(self, timeout_s: float = 120.0) -> float:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")},
            "SEMAFLOW_REDIS_URL": self.coll.redis_url,
            "SEMAFLOW_DATA_DIR": str(self.data_dir),
            "SEMAFLOW_STORE_DIR": str(self.coll.store_dir),
            "SEMAFLOW_PORT": str(self.port),
            "SEMAFLOW_HOST": "127.0.0.1",
            "SEMAFLOW_RATE_LIMIT_ENABLED": "false",
            "SEMAFLOW_SEARCH_CACHE_ENABLED": "false",
            "SEMAFLOW_MODEL_PATH": str(self.data_dir / "no-model"),  # vector searches only: no model in memory
            "SEMAFLOW_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(self.tree),
        }
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"],
            env=env,
            cwd=self.tree,
            stdout=subprocess.DEVNULL,
            stderr=(self.data_dir / "gateway.log").open("ab"),
        )
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.data_dir}/gateway.log")
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    return time.perf_counter() - started
            except OSError:
                self.conn = None
            time.sleep(0.01)
        raise RuntimeError("gateway not ready in time")

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def request(
        self, method: str, path: str, body: bytes | None = None, *, auth: bool = True, stale_ok: bool = False
    ) -> tuple[int, bytes]:
        """One request on the kept-alive connection; one more on a new one if the server closed it while idle."""
        headers = {"Content-Type": "application/json"}
        if stale_ok:
            headers["Cache-Control"] = "max-stale"
        if auth:
            headers["Authorization"] = f"Bearer {self.coll.key}"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def search(self, query: list[float], *, stale_ok: bool = False) -> tuple[float, str]:
        body = json.dumps({"vector": query, "k": 10}).encode()
        started = time.perf_counter()
        status, data = self.request("POST", f"/v1/collections/{NAME}/search", body, stale_ok=stale_ok)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"search answered {status}: {data[:200]!r}")
        return elapsed, json.loads(data)["index_version"]

    def swaps(self) -> float:
        status, data = self.request("GET", "/metrics", auth=False)  # the public series: no key needed
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        for line in data.decode().splitlines():
            if line.startswith("semaflow_index_swaps_total"):
                return float(line.split()[-1])
        return 0.0

    def cpu(self) -> float:
        assert self.proc is not None
        return common.cpu_seconds([self.proc.pid])

    def memory_mib(self) -> dict[str, float]:
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) / 1024
        return fields

    def wait_quiet(self, max_s: float = 60.0, window_s: float = 0.5, below: float = 0.05) -> None:
        """Until the gateway uses less than ``below`` of a core (its background start-up work is done)."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            before = self.cpu()
            time.sleep(window_s)
            if (self.cpu() - before) / window_s < below:
                return


# --- measurements ------------------------------------------------------------------------------


@dataclass
class Subject:
    """One gateway under test: its label, its collection, the process and what was measured."""

    label: str
    coll: BenchCollection
    gw: Gateway
    out: dict[str, Any] = field(default_factory=dict)


def start(subject: Subject) -> None:
    """Cold start (empty segment cache), then a warm restart; memory once the restarted one is quiet."""
    log(f"{subject.label}: cold start")
    subject.out["ready_cold_s"] = subject.gw.start()
    subject.gw.wait_quiet()
    subject.gw.stop()
    log(f"{subject.label}: warm restart")
    subject.out["ready_warm_s"] = subject.gw.start()
    subject.gw.wait_quiet()
    subject.out["memory_idle_mib"] = subject.gw.memory_mib()


def search_idle(subjects: list[Subject], queries: list[list[float]]) -> None:
    """The same searches on every gateway, taking turns, so the machine's noise falls on all alike."""
    log(f"{len(queries)} searches idle, gateways taking turns")
    for subject in subjects:
        for q in queries[:20]:  # connection and first-touch warm-up
            subject.gw.search(q)
    samples: dict[str, list[float]] = {s.label: [] for s in subjects}
    cpu0 = {s.label: s.gw.cpu() for s in subjects}
    wall0 = time.perf_counter()
    for i, q in enumerate(queries):
        for subject in subjects if i % 2 == 0 else subjects[::-1]:  # each goes first half the time
            samples[subject.label].append(subject.gw.search(q)[0])
    wall = time.perf_counter() - wall0
    for subject in subjects:
        cpu = subject.gw.cpu() - cpu0[subject.label]
        subject.out["search_idle"] = _latencies(samples[subject.label], cpu, wall)
        subject.out["memory_searched_mib"] = subject.gw.memory_mib()


def swap_cost(subject: Subject, publish: int, batch: int, rng: np.random.Generator) -> None:
    """CPU and wall time per swap: one batch at a time, each waited for until the gateway swapped it in."""
    log(f"{subject.label}: {publish} swaps, one at a time")
    gw = subject.gw
    swaps0, cpu0, wall0 = gw.swaps(), gw.cpu(), time.perf_counter()
    for _ in range(publish):
        target = gw.swaps() + 1
        subject.coll.publish(normalize(rng.normal(size=(batch, common.DIM))))
        deadline = time.monotonic() + 60
        while gw.swaps() < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not swap in the published version within 60 s")
            time.sleep(0.02)
    swaps = gw.swaps() - swaps0
    subject.out["swap"] = {
        "swaps": swaps,
        "cpu_s_per_swap": (gw.cpu() - cpu0) / max(swaps, 1),
        "wall_s_per_swap": (time.perf_counter() - wall0) / max(swaps, 1),
    }


def search_publishing(subjects: list[Subject], queries: list[list[float]], args: argparse.Namespace) -> None:
    """Searches, gateways taking turns, while every collection publishes small batches back to back."""
    log(f"searches while {args.busy_publish} batches of {args.busy_batch} publish back to back, into every collection")
    rng = np.random.default_rng(5)
    batches = [normalize(rng.normal(size=(args.busy_batch, common.DIM))) for _ in range(args.busy_publish)]
    done = {s.label: threading.Event() for s in subjects}

    def publish_all(subject: Subject) -> None:
        try:
            for vectors in batches:
                subject.coll.publish(vectors)
        finally:
            done[subject.label].set()

    samples: dict[str, list[float]] = {s.label: [] for s in subjects}
    stale: dict[str, list[float]] = {s.label: [] for s in subjects}
    versions: dict[str, set[str]] = {s.label: set() for s in subjects}
    cpu0 = {s.label: s.gw.cpu() for s in subjects}
    wall0 = time.perf_counter()
    threads = [threading.Thread(target=publish_all, args=(s,), name=f"publish-{s.label}") for s in subjects]
    for thread in threads:
        thread.start()
    i = 0
    while not all(event.is_set() for event in done.values()):
        for subject in subjects if i % 2 == 0 else subjects[::-1]:
            if done[subject.label].is_set():
                continue  # only searches made while its own collection was publishing count
            elapsed, version = subject.gw.search(queries[i % len(queries)])
            samples[subject.label].append(elapsed)
            versions[subject.label].add(version)
            stale[subject.label].append(subject.gw.search(queries[i % len(queries)], stale_ok=True)[0])
        i += 1
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall0
    for subject in subjects:
        if not samples[subject.label]:
            raise RuntimeError(f"{subject.label}: no search finished while its collection was publishing")
        cpu = subject.gw.cpu() - cpu0[subject.label]
        n = len(samples[subject.label]) + len(stale[subject.label])
        subject.out["search_publishing"] = _latencies(
            samples[subject.label], cpu * len(samples[subject.label]) / n, wall
        )
        subject.out["search_publishing"]["versions_seen"] = len(versions[subject.label])
        subject.out["search_publishing_stale_ok"] = _latencies(
            stale[subject.label], cpu * len(stale[subject.label]) / n, wall
        )


def empty_memory(label: str, tree: Path, port: int, db: int, root: Path) -> dict[str, float]:
    """Memory of the same gateway idle with no collection at all: what the process costs before any index."""
    empty = BenchCollection(port, db, root / f"objects-empty-{db}")
    empty.client.hdel(keys.collections(TENANT), NAME)
    data_dir = root / f"gateway-{label}-empty"
    data_dir.mkdir()
    gw = Gateway(tree, empty, data_dir)
    try:
        gw.start()
        gw.wait_quiet()
        return gw.memory_mib()
    finally:
        gw.stop()


def _latencies(samples: list[float], cpu_s: float, wall_s: float) -> dict[str, Any]:
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "max_ms": max(ms),
        "gateway_cpu_s": cpu_s,
        "wall_s": wall_s,
    }


def floor_ratio(measured: float, floor: float) -> str:
    """``measured / floor``, refused when the floor came out slower than what it bounds (a noisy run)."""
    if floor <= 0 or floor > measured:
        return "refused: reference slower than measured (noise)"
    return f"{measured / floor:.2f}x"


def time_import(tree: Path) -> float:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", "import services.gateway.main"], check=True, cwd=tree, env=env)
    return time.perf_counter() - started


def _dig(result: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = result
    for name in path:
        value = value[name]
    return float(value)


def _rows(label: str, r: dict[str, Any]) -> list[list[str]]:
    """The table rows of one gateway's results."""
    mem, searched = r["memory_idle_mib"], r["memory_searched_mib"]
    idle, busy, swap = r["search_idle"], r["search_publishing"], r["swap"]
    stale = r["search_publishing_stale_ok"]
    imported = f"import alone {r['import_s']:.2f} s"
    busy_detail = (
        f"p90 {busy['p90_ms']:.1f}, max {busy['max_ms']:.0f}; {busy['n']} searches, {busy['versions_seen']} "
        f"versions; gateway CPU {busy['gateway_cpu_s'] / busy['n'] * 1000:.1f} ms per search (swaps included)"
    )
    idle_detail = f"p90 {idle['p90_ms']:.1f}; gateway CPU {idle['gateway_cpu_s'] / idle['n'] * 1000:.1f} ms per search"

    empty = r["memory_empty_mib"]

    def split(m: dict[str, float]) -> str:
        return (
            f"anon {m['RssAnon']:.0f}, file {m['RssFile']:.0f}; "
            f"beyond an empty gateway ({empty['VmRSS']:.0f}): {m['VmRSS'] - empty['VmRSS']:.0f}"
        )

    per_swap = f"{swap['cpu_s_per_swap']:.3f} / {swap['wall_s_per_swap']:.3f}"
    return [
        ["ready, cold cache (s)", f"{r['ready_cold_s']:.2f}", imported, floor_ratio(r["ready_cold_s"], r["import_s"])],
        [
            "ready, warm restart (s)",
            f"{r['ready_warm_s']:.2f}",
            imported,
            floor_ratio(r["ready_warm_s"], r["import_s"]),
        ],
        ["RSS after restart, idle (MiB)", f"{mem['VmRSS']:.0f}", split(mem), ""],
        ["RSS after searches (MiB)", f"{searched['VmRSS']:.0f}", split(searched), ""],
        ["per swap: CPU s / wall s", per_swap, f"{swap['swaps']:.0f} swaps", ""],
        ["search p50 idle (ms)", f"{idle['p50_ms']:.1f}", idle_detail, ""],
        [
            "search p50 while publishing (ms)",
            f"{busy['p50_ms']:.1f}",
            busy_detail,
            floor_ratio(busy["p50_ms"], idle["p50_ms"]),
        ],
        [
            "same, Cache-Control: max-stale (ms)",
            f"{stale['p50_ms']:.1f}",
            f"p90 {stale['p90_ms']:.1f}, max {stale['max_ms']:.0f}; {stale['n']} searches",
            floor_ratio(stale["p50_ms"], idle["p50_ms"]),
        ],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000, help="collection size (default 100,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="documents per published batch (default 1,000)")
    parser.add_argument("--publish", type=int, default=10, help="batches published per phase (default 10)")
    parser.add_argument("--busy-publish", type=int, default=200, help="batches published while searching (default 200)")
    parser.add_argument("--busy-batch", type=int, default=50, help="documents per such batch (default 50)")
    parser.add_argument("--searches", type=int, default=200, help="idle searches (default 200)")
    parser.add_argument("--reference-rev", default=None, help="also measure the gateway of this git revision")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="semaflow-swaps-"))
    redis_proc, port = start_redis(root)
    results: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(11)
    try:
        trees = [("this tree", common.REPO)]
        if args.reference_rev:
            trees.append((f"rev {args.reference_rev}", common.export_tree(args.reference_rev, root)))
        vectors = normalize(np.random.default_rng(7).normal(size=(args.vectors, common.DIM)))
        subjects: list[Subject] = []
        for db, (label, tree) in enumerate(trees):
            coll = BenchCollection(port, db, root / f"objects-{db}")
            log(f"{label}: publishing {args.vectors:,} vectors in batches of {args.batch:,}")
            for begin in range(0, args.vectors, args.batch):
                coll.publish(vectors[begin : begin + args.batch])
            slug = label.replace(" ", "-")
            data_dir = root / f"gateway-{slug}"
            data_dir.mkdir()
            subjects.append(Subject(label, coll, Gateway(tree, coll, data_dir)))
        try:
            for subject in subjects:
                start(subject)
            queries = [[float(x) for x in row] for row in normalize(rng.normal(size=(args.searches, common.DIM)))]
            search_idle(subjects, queries)
            for subject in subjects:
                swap_cost(subject, args.publish, args.batch, rng)
            search_publishing(subjects, queries, args)
        finally:
            for subject in subjects:
                subject.gw.stop()
        for db, ((_, tree), subject) in enumerate(zip(trees, subjects, strict=True)):
            slug = subject.label.replace(" ", "-")
            subject.out["memory_empty_mib"] = empty_memory(slug, tree, port, db + 8, root)
            subject.out["import_s"] = percentile([time_import(tree) for _ in range(3)], 50)
            results[subject.label] = subject.out
    finally:
        redis_proc.terminate()
        redis_proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        f"semaflow hot swaps: {args.vectors:,} vectors, {args.vectors // args.batch} flat segments of {args.batch:,}; "
        f"{args.publish} swaps measured, {args.busy_publish} batches of {args.busy_batch} published while searching "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print()
    rows = [[label, *row] for label, r in results.items() for row in _rows(label, r)]
    print(
        table(["gateway", "measurement", "value", "detail", "ratio to floor (ready: import; busy search: idle)"], rows)
    )
    if len(results) == 2:
        (new_label, new), (old_label, old) = results.items()
        print()
        print(f"{old_label} -> {new_label} (same run, same machine):")
        paths: tuple[tuple[str, tuple[str, ...]], ...] = (
            ("RSS after restart, idle (MiB)", ("memory_idle_mib", "VmRSS")),
            ("private (anon) RSS after restart, idle (MiB)", ("memory_idle_mib", "RssAnon")),
            ("private (anon) RSS after searches (MiB)", ("memory_searched_mib", "RssAnon")),
            ("CPU per swap (s)", ("swap", "cpu_s_per_swap")),
            ("ready, warm restart (s)", ("ready_warm_s",)),
            ("search p50 idle (ms)", ("search_idle", "p50_ms")),
            ("gateway CPU over the idle searches (s)", ("search_idle", "gateway_cpu_s")),
            ("search p50 while publishing (ms)", ("search_publishing", "p50_ms")),
            ("same, Cache-Control: max-stale (ms)", ("search_publishing_stale_ok", "p50_ms")),
        )
        for name, path in paths:
            print(f"  {name:42s} {_dig(old, path):10.3f} -> {_dig(new, path):10.3f}")
    common.write_json(args.json, {"args": vars(args) | {"json": None}, **results, "environment": common.environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
