"""Scale benchmark: one collection grown step by step (to 1,000,000 vectors by default), measured at each size.

Run by hand (not pytest), alone on the machine::

    .venv/bin/python bench/scale.py                                  # 100k, 300k, 1M
    .venv/bin/python bench/scale.py --sizes 20000,50000 --n1 100     # quick check
    .venv/bin/python bench/scale.py --json bench/results/scale.json

Against a ``semaflow up`` stack (its embedded Redis and local object store), with the defaults a user
gets (tiered merging as segments arrive, approximate large tiers with their recall checked). The
documents are random unit vectors sent as ``vector_b64``, 1,000 per request (no embedding), so the
figures are those of indexing, merging, storing and searching. At each size:

- **ingest**: vectors per second from the first request to searchable, and the stack's CPU
  seconds per 1,000 vectors (all its processes: gateway, indexer, Redis...);
- **index**: segments and how many are approximate (with the recall measured at build), from the
  live manifest; merges run
  (``index.compacted`` in the stack's log), their seconds, and the indexer's peak memory (VmHWM);
- **search**: HTTP vector search (k=10, search cache bypassed) p50/p99 at concurrency 1 and
  throughput at concurrency 16; the floor is FAISS itself in this process, in the same run, over
  the very files of the live version (each segment read with ``faiss.read_index``, searched with the
  segment's own ``nprobe``/``efSearch``, top-k merged): one query at a time on one thread for
  p50/p99, and every query in one call on all threads for throughput (the most batching can give).
  A floor slower than the HTTP path is no floor: then no ratio is printed, and the reason instead;
- **recall@10** of the HTTP answers against exact search (numpy over every vector sent);
- **memory and start-up**: the gateway's RSS (and its peak), and seconds from spawning a second
  gateway on the same Redis and store until ``/readyz`` answers 200 (twice: cold, then with the
  segment files in the page cache);
- **search during ingest**: HTTP p50 at concurrency 1 while ``--ingest-during`` more batches are
  sent (two at a time, by another process whose bodies are built beforehand, as another client's
  would be) and published, against the idle p50 just measured (target ≤ 2×);
- **storage**: bytes in the object store per live vector, by kind (segments, manifests, batches,
  vectors), and the manifests' count and average size; and the bytes of the live version's own
  files per vector, what storage comes down to once cleanup has removed what nothing needs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import check, log, percentile, table, verdict
from startup import stack_env, time_gateway

DIM = common.DIM
K = 10
NAME = "scale"
BATCH = 1_000
TARGET_DURING_INGEST = 2.0


class Vectors:
    """Unit vectors of one distribution (``--data``), each draw from a seed of its own."""

    def __init__(self, data: str, seed: int) -> None:
        self.data, self.seed = data, seed

    def __call__(self, n: int) -> np.ndarray:
        from compaction import vectors_for  # bench/compaction.py: random, topics or noisy

        self.seed += 1
        return np.ascontiguousarray(vectors_for(n, self.seed, self.data), dtype=np.float32)


def _b64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4").tobytes()).decode()


def _body(vectors: np.ndarray, start: int) -> bytes:
    docs = [{"id": f"v{start + j}", "vector_b64": _b64(row)} for j, row in enumerate(vectors)]
    return json.dumps({"documents": docs}).encode()


async def ingest(stack: common.Stack, http: Any, vectors: np.ndarray, first: int, in_flight: int = 4) -> list[str]:
    """Send ``vectors`` (ids from ``first``) in batches; the accepted jobs' ids."""
    url = f"{stack.url}/v1/collections/{NAME}/documents"
    h = {**stack.headers, "Content-Type": "application/json"}
    sem = asyncio.Semaphore(in_flight)
    jobs: list[str] = []

    async def post(at: int) -> None:
        async with sem:
            data = await asyncio.to_thread(_body, vectors[at : at + BATCH], first + at)
            async with http.post(url, data=data, headers=h) as resp:
                jobs.append((await check(resp, 202))["job_id"])

    await asyncio.gather(*(post(at) for at in range(0, len(vectors), BATCH)))
    return jobs


# The bodies the sending process will post (set there by _build_bodies, before the searches are timed).
_BODIES: list[bytes] = []


def _build_bodies(vectors: np.ndarray, first: int) -> None:
    """In the sending process: the request bodies of ``vectors`` (ids from ``first``), built before the clock
    starts, so that the searches measured meanwhile share the machine with the service, not with a client
    building JSON (which a real client does on a machine of its own)."""
    _BODIES[:] = [_body(vectors[at : at + BATCH], first + at) for at in range(0, len(vectors), BATCH)]


def _send_bodies(url: str, headers: dict[str, str], in_flight: int) -> list[str]:
    """In the sending process: POST the bodies built, ``in_flight`` at a time; the accepted jobs' ids."""

    async def run() -> list[str]:
        async with common.session(connections=in_flight, timeout_s=600) as http:
            sem = asyncio.Semaphore(in_flight)
            jobs: list[str] = []

            async def post(data: bytes) -> None:
                async with sem, http.post(url, data=data, headers=headers) as resp:
                    jobs.append((await check(resp, 202))["job_id"])

            await asyncio.gather(*(post(data) for data in _BODIES))
            return jobs

    return asyncio.run(run())


class Sender:
    """Another process that sends batches (as another client would), so that building and sending them takes
    nothing from this process's event loop and GIL, where the searches measured during the ingest run."""

    def __init__(self, stack: common.Stack) -> None:
        self.url = f"{stack.url}/v1/collections/{NAME}/documents"
        self.headers = {**stack.headers, "Content-Type": "application/json"}
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    async def prepare(self, vectors: np.ndarray, first: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, _build_bodies, vectors, first)

    async def send(self, in_flight: int) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, _send_bodies, self.url, self.headers, in_flight
        )

    def close(self) -> None:
        self.pool.shutdown()


class Searcher:
    """Vector searches over HTTP, the search cache bypassed."""

    def __init__(self, stack: common.Stack, http: Any) -> None:
        self.url = f"{stack.url}/v1/collections/{NAME}/search"
        self.http = http
        self.h = {**stack.headers, "Content-Type": "application/json", "Cache-Control": "no-cache, no-store"}

    async def one(self, q: np.ndarray) -> tuple[float, list[str]]:
        body = json.dumps({"vector": q.tolist(), "k": K}).encode()
        t = time.perf_counter()
        async with self.http.post(self.url, data=body, headers=self.h) as resp:
            res = await check(resp, 200)
        return time.perf_counter() - t, [r["id"] for r in res["results"]]

    async def sequential(self, queries: np.ndarray) -> tuple[list[float], list[list[str]]]:
        times, hits = [], []
        for q in queries:
            t, ids = await self.one(q)
            times.append(t)
            hits.append(ids)
        return times, hits

    async def concurrent(self, queries: np.ndarray, concurrency: int) -> float:
        """Requests per second with ``concurrency`` in flight."""
        it = iter(queries)

        async def worker() -> None:
            for q in it:
                await self.one(q)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(queries) / (time.perf_counter() - t)


class Floor:
    """FAISS over the live version's own segment files, in this process."""

    def __init__(self, objects: Path, manifest: dict[str, Any]) -> None:
        import faiss

        self.faiss = faiss
        prefix = objects / manifest["tenant"] / manifest["collection"] / manifest["collection_id"] / "segments"
        self.parts: list[tuple[Any, list[str]]] = []
        for seg in manifest["segments"]:
            index = faiss.read_index(str(prefix / seg["id"] / "index.faiss"))
            param = seg.get("search_param")
            if param is not None:
                if seg["kind"] == "ivf":
                    faiss.extract_index_ivf(index).nprobe = param
                elif seg["kind"] == "hnsw":
                    faiss.ParameterSpace().set_index_parameter(index, "efSearch", param)
            with gzip.open(prefix / seg["id"] / "docs.jsonl.gz", "rt") as fh:
                ids = [json.loads(line)["id"] for line in fh]
            self.parts.append((index, ids))

    def search(self, queries: np.ndarray) -> list[list[str]]:
        found = [self._one(index, ids, queries) for index, ids in self.parts]
        out = []
        for row in range(len(queries)):
            pairs = sorted((pair for part in found for pair in part[row]), reverse=True)[:K]
            out.append([doc for _, doc in pairs])
        return out

    def _one(self, index: Any, ids: list[str], queries: np.ndarray) -> list[list[tuple[float, str]]]:
        scores, rows = index.search(queries, K)
        return [
            [(float(s), ids[r]) for s, r in zip(srow, rrow, strict=True) if r >= 0]
            for srow, rrow in zip(scores, rows, strict=True)
        ]

    def latencies(self, queries: np.ndarray) -> list[float]:
        self.faiss.omp_set_num_threads(1)
        times = []
        for q in queries:
            t = time.perf_counter()
            self.search(q[None, :])
            times.append(time.perf_counter() - t)
        return times

    def throughput(self, queries: np.ndarray) -> float:
        """Queries per second: every query in one FAISS call per segment, on all threads (what batching allows)."""
        self.faiss.omp_set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        self.search(queries)
        return len(queries) / (time.perf_counter() - t)


def service_cpu(stack: common.Stack) -> dict[str, float]:
    """CPU seconds each service has used so far, with the processes it started (the gateway's body workers)."""
    return {
        name: common.cpu_seconds(common.process_tree(pid)) for name, pid in stack.pids.items() if name != "supervisor"
    }


def recall(hits: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(h) & set(e)) / K for h, e in zip(hits, exact, strict=True)]))


def exact_top(stored: np.ndarray, queries: np.ndarray) -> list[list[str]]:
    out = []
    for at in range(0, len(queries), 50):
        scores = queries[at : at + 50] @ stored.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        for row, cand in enumerate(top):
            order = cand[np.argsort(-scores[row, cand])]
            out.append([f"v{i}" for i in order])
    return out


def status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def live_bytes(objects: Path, manifest: dict[str, Any]) -> int:
    """Bytes of the files the live version references: what storage comes down to once cleanup ran."""
    prefix = objects / manifest["tenant"] / manifest["collection"] / manifest["collection_id"] / "segments"
    return sum((prefix / seg["id"] / name).stat().st_size for seg in manifest["segments"] for name in seg["files"])


def storage(objects: Path, live: int) -> dict[str, Any]:
    sizes: dict[str, int] = {}
    manifests = 0
    for path in objects.rglob("*"):
        if path.is_file():
            parts = path.relative_to(objects).parts
            kind = parts[3] if len(parts) > 4 else "other"
            sizes[kind] = sizes.get(kind, 0) + path.stat().st_size
            manifests += kind == "manifests"
    total = sum(sizes.values())
    return {
        "bytes": total,
        "bytes_per_vector": total / max(live, 1),
        "by_kind_per_vector": {k: v / max(live, 1) for k, v in sorted(sizes.items())},
        "manifests": manifests,
        "manifest_avg_bytes": sizes.get("manifests", 0) / max(manifests, 1),
        "raw_bytes_per_vector": DIM * 4,
    }


def merges(log_path: Path, seen: int) -> tuple[list[tuple[float, int]], int]:
    """The merges (seconds, vectors) the stack logged after its first ``seen`` log lines, and the line count."""
    lines = log_path.read_text(errors="replace").splitlines()
    found = []
    for line in lines[seen:]:
        if '"index.compacted"' in line:
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(line[line.index("{") :])
                found.append((float(event["seconds"]), int(event["vectors"])))
    return found, len(lines)


async def settle(stack: common.Stack, http: Any, jobs: list[str], documents: int, t0: float) -> dict[str, Any]:
    info, _ = await common.wait_searchable(stack, http, NAME, jobs, documents, t0=t0, timeout_s=7200)
    return dict(info)


async def measure_size(
    stack: common.Stack, http: Any, draw: Vectors, stored: list[np.ndarray], size: int, args: Any, seen: int
) -> tuple[dict[str, Any], int]:
    have = sum(len(v) for v in stored)
    new = draw(size - have)
    log(f"growing to {size:,}: sending {len(new):,} vectors")
    tree = stack.tree()
    cpu0, t0 = common.cpu_seconds(tree), time.perf_counter()
    jobs = await ingest(stack, http, new, have)
    stored.append(new)
    await settle(stack, http, jobs, size, t0)
    ingest_s = time.perf_counter() - t0
    ingest_cpu = common.cpu_seconds(tree) - cpu0
    log(f"searchable after {ingest_s:.0f} s; waiting for merges to finish")
    await stack.wait_idle(http, max_wait_s=7200, cpu_frac=0.15, window_s=3.0)
    async with http.get(f"{stack.url}/v1/collections/{NAME}", headers=stack.headers) as resp:
        info = await check(resp, 200)
    merged, seen = merges(stack.log_path, seen)  # type: ignore[arg-type]

    everything = np.concatenate(stored)
    queries = draw(args.n1)
    searcher = Searcher(stack, http)
    await searcher.sequential(queries[:10])  # warm
    times, hits = await searcher.sequential(queries)
    rps = await searcher.concurrent(draw(args.n16), 16)
    exact = exact_top(everything, queries)

    objects = stack.data_dir / "objects"  # type: ignore[operator]
    latest = info["index_version"]
    manifest_path = next(objects.rglob(f"manifests/{latest}.json"))
    manifest = json.loads(manifest_path.read_text())
    floor = Floor(objects, manifest)
    floor_times = floor.latencies(queries)
    floor_rps = floor.throughput(draw(args.n16))
    floor_recall = recall(floor.search(queries), exact)
    del floor

    gw = stack.pids["gateway"]
    env = stack_env(stack)
    ready_cold, _ = time_gateway(env, timeout_s=600)
    ready_warm, _ = time_gateway(env, timeout_s=600)

    # Search while more batches publish (they count towards the next size).
    during: list[float] = []
    extra = draw(args.ingest_during * BATCH)
    during_queries = draw(10_000)
    sender = Sender(stack)
    try:
        await sender.prepare(extra, size)
        cpu_at, busy0, t0 = service_cpu(stack), common.machine_busy_seconds(), time.perf_counter()
        sending = asyncio.create_task(sender.send(in_flight=2))
        i = 0
        while not sending.done():
            t, _ = await searcher.one(during_queries[i % len(during_queries)])
            during.append(t)
            i += 1
        extra_jobs = await sending
        window_s = time.perf_counter() - t0
        # Where the machine's CPU went meanwhile (the cores: os.cpu_count()).
        during_cpu = {k: v - cpu_at.get(k, 0.0) for k, v in service_cpu(stack).items()}
        during_cpu["machine"] = common.machine_busy_seconds() - busy0
        log(f"while sending ({window_s:.2f} s), CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in during_cpu.items()))
    finally:
        sender.close()
    stored.append(extra)
    await settle(stack, http, extra_jobs, size + len(extra), time.perf_counter())
    await stack.wait_idle(http, max_wait_s=7200, cpu_frac=0.15, window_s=3.0)
    merged_during, seen = merges(stack.log_path, seen)  # type: ignore[arg-type]

    return {
        "size": size,
        "ingest_vectors_per_s": len(new) / ingest_s,
        "ingest_cpu_s_per_1000": ingest_cpu / len(new) * 1000,
        "segments": info["segments"],
        "approximate_segments": sum(seg["kind"] != "flat" for seg in manifest["segments"]),
        "segment_kinds": [(seg["kind"], seg["vectors"], seg.get("search_param")) for seg in manifest["segments"]],
        "min_recall_at_build": min((seg["recall"] for seg in manifest["segments"] if "recall" in seg), default=None),
        "merges": len(merged),
        "merge_s_total": sum(s for s, _ in merged),
        "largest_merge": max(merged, key=lambda m: m[1], default=(0.0, 0)),
        "indexer_peak_mb": status_kb(stack.pids["indexer"], "VmHWM") / 1024,
        "http_p50_ms": percentile(times, 50) * 1000,
        "http_p99_ms": percentile(times, 99) * 1000,
        "http_rps_c16": rps,
        "floor_p50_ms": percentile(floor_times, 50) * 1000,
        "floor_p99_ms": percentile(floor_times, 99) * 1000,
        "floor_rps_c16": floor_rps,
        "recall_at_10": recall(hits, exact),
        "floor_recall_at_10": floor_recall,
        "gateway_rss_mb": status_kb(gw, "VmRSS") / 1024,
        "gateway_peak_mb": status_kb(gw, "VmHWM") / 1024,
        "ready_cold_s": ready_cold,
        "ready_warm_s": ready_warm,
        "during_ingest_p50_ms": percentile(during, 50) * 1000 if during else None,
        "during_ingest_searches": len(during),
        "during_ingest_window_s": window_s,
        "during_ingest_cpu_s": during_cpu,
        "merges_after_extra": len(merged_during),
        "storage": storage(objects, size + len(extra)),
        "live_bytes_per_vector": live_bytes(objects, manifest) / size,
    }, seen


def ratio(measured: float, reference: float, *, lower_is_better: bool = True) -> str:
    """measured / reference, or why there is none (a reference better than what it is a floor of)."""
    if lower_is_better and reference > measured:
        return "n/a (floor slower)"
    if not lower_is_better and reference < measured:
        return "n/a (floor slower)"
    return f"{measured / reference:.2f}x"


def report(rows: list[dict[str, Any]]) -> bool:
    print()
    print(f"semaflow scale: one collection grown to {rows[-1]['size']:,} vectors (vector_b64, k=10)")
    print()
    print(
        table(
            ["size", "ingest vec/s", "CPU s/1k vec", "segments (approx)", "merges", "merge s", "indexer peak MB"],
            [
                [
                    f"{r['size']:,}",
                    r["ingest_vectors_per_s"],
                    r["ingest_cpu_s_per_1000"],
                    f"{r['segments']} ({r['approximate_segments']})",
                    r["merges"],
                    r["merge_s_total"],
                    r["indexer_peak_mb"],
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        table(
            ["size", "p50 ms", "floor p50", "p50 ratio", "p99 ms", "c=16 req/s", "floor req/s", "rps ratio"],
            [
                [
                    f"{r['size']:,}",
                    r["http_p50_ms"],
                    r["floor_p50_ms"],
                    ratio(r["http_p50_ms"], r["floor_p50_ms"]),
                    r["http_p99_ms"],
                    r["http_rps_c16"],
                    r["floor_rps_c16"],
                    ratio(r["http_rps_c16"], r["floor_rps_c16"], lower_is_better=False),
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        table(
            ["size", "recall@10", "floor recall", "gateway RSS MB", "peak MB", "ready cold s", "warm s"],
            [
                [
                    f"{r['size']:,}",
                    r["recall_at_10"],
                    r["floor_recall_at_10"],
                    r["gateway_rss_mb"],
                    r["gateway_peak_mb"],
                    r["ready_cold_s"],
                    r["ready_warm_s"],
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        table(
            ["size", "p50 during ingest", "x idle", "bytes/vector", "live B/vector", "manifests n", "manifest avg B"],
            [
                [
                    f"{r['size']:,}",
                    r["during_ingest_p50_ms"],
                    (r["during_ingest_p50_ms"] or 0) / r["http_p50_ms"],
                    r["storage"]["bytes_per_vector"],
                    r["live_bytes_per_vector"],
                    r["storage"]["manifests"],
                    r["storage"]["manifest_avg_bytes"],
                ]
                for r in rows
            ],
        )
    )
    print(f"(raw float32 vector: {DIM * 4} bytes)")
    print()
    ok = True
    for r in rows:
        during = (r["during_ingest_p50_ms"] or 0) / r["http_p50_ms"]
        good = during <= TARGET_DURING_INGEST and r["recall_at_10"] >= 0.95
        ok &= good
        print(
            f"  {r['size']:>9,}: search during ingest {during:.2f}x idle (target <= {TARGET_DURING_INGEST}),"
            f" recall@10 {r['recall_at_10']:.3f} (target >= 0.95)  {verdict(good)}"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated sizes (default 100k,300k,1M)")
    parser.add_argument("--n1", type=int, default=200, help="concurrency-1 searches per size (default 200)")
    parser.add_argument("--n16", type=int, default=800, help="concurrency-16 searches per size (default 800)")
    parser.add_argument("--ingest-during", type=int, default=20, help="batches sent while searching (default 20)")
    parser.add_argument("--seed", type=int, default=11)
    data_help = "random unit vectors (default; no structure: the hardest case for an index), or topics/noisy"
    parser.add_argument("--data", choices=["random", "topics", "noisy"], default="random", help=data_help)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    draw = Vectors(args.data, args.seed)

    stack = common.Stack().start()
    rows: list[dict[str, Any]] = []
    try:

        async def run() -> None:
            async with common.session(connections=64, timeout_s=600) as http:
                await stack.wait_idle(http)
                async with http.put(f"{stack.url}/v1/collections/{NAME}", headers=stack.headers) as resp:
                    await check(resp, 200, 201)
                stored: list[np.ndarray] = []
                seen = 0
                for size in sizes:
                    if stored and size <= sum(len(v) for v in stored):
                        continue
                    row, seen = await measure_size(stack, http, draw, stored, size, args, seen)
                    rows.append(row)
                    log(json.dumps(row, default=str))

        asyncio.run(run())
    finally:
        stack.stop()
    ok = report(rows)
    common.write_json(args.json, {"sizes": rows, "environment": common.environment()})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
