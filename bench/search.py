"""Search benchmark: HTTP search latency on a 100,000-vector collection vs. the in-process floor.

Run by hand (not pytest)::

    .venv/bin/python bench/search.py                                # full size
    .venv/bin/python bench/search.py --vectors 20000 --n1 100 --n32 500   # quick check
    .venv/bin/python bench/search.py --json bench/results/search.json

1. Ingest ``--vectors`` random unit vectors (fixed seed) as documents with vectors, 1,000 per
   request, and wait until every one is searchable.
2. On the idle stack: ``query`` searches (SciFact query texts) and ``vector`` searches (random unit
   vectors), ``--n1`` requests at concurrency 1 and ``--n32`` at concurrency 32 (k=10).
3. The floor, in this process and in the same run: for ``query``, ``Encoder.encode`` + a search of
   one ``faiss.IndexFlatIP`` holding the same vectors; for ``vector``, the FAISS search alone.
   Concurrency-1 HTTP and floor samples are taken in alternating blocks, so noise from the shared
   machine hits both alike; the stack is idle while the floor runs. The floor is the fastest of the
   thread settings tried: FAISS with all threads and with one, and for ``query`` torch with its
   default threads and with one (on a busy host torch's default can be several times slower). A
   floor slower than the HTTP path is no floor: then no ratio is printed, and the reason instead.

4. The cached run: ``--cached-n`` ``query`` searches drawn from a Zipf distribution (exponent
   ``--zipf-s``) over ``--zipf-distinct`` SciFact query texts, at concurrency 1, from a cold cache.
   Each answer's ``Cache-Status`` tells a hit (L1 or L2) from a miss. The other runs send
   ``Cache-Control: no-cache, no-store`` so they measure the uncached path and leave the cache cold.

5. With ``--batching-reference``: ``query`` throughput at concurrency ``-c`` with the gateway's query
   micro-batching against without it, in the same run: a second gateway on the same stack, started
   with ``SEMAFLOW_QUERY_BATCH_MAX=1`` (each query encoded alone, as before batching), and the two
   loaded in turn, ``--batching-rounds`` times each, one at a time. Target: >= 1.5x the requests per
   second; the gateways' CPU per request is printed beside it.

Targets: p50(HTTP) / p50(floor) <= 1.5 at concurrency 1, for both kinds; cached-run hit rate >= 80 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import check, log, percentile, table, verdict

from semaflow.redis_server import free_port

DIM = common.DIM
TARGET_RATIO = 1.5
TARGET_HIT_RATE = 0.80
TARGET_BATCHING = 1.5
K = 10


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors, rounded to 6 decimals (short JSON) then renormalised as the service does."""
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.round(v, 6).astype(np.float32)


def as_stored(v: np.ndarray) -> np.ndarray:
    """What the service indexes for a given vector (it L2-normalises every given vector)."""
    from shared.index.documents import normalize

    return normalize(v)


def vec_json(row: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in row.tolist()) + "]"


async def ingest_vectors(
    stack: common.Stack, http: Any, name: str, vectors: np.ndarray, batch: int, in_flight: int
) -> dict[str, Any]:
    base = f"{stack.url}/v1/collections/{name}"
    h = {**stack.headers, "Content-Type": "application/json"}
    async with http.put(base, headers=h) as resp:
        await check(resp, 200, 201)
    starts = list(range(0, len(vectors), batch))
    job_ids: list[str] = []
    sem = asyncio.Semaphore(in_flight)

    def body(start: int) -> bytes:
        docs = ",".join(
            f'{{"id":"v{start + j}","vector":{vec_json(row)}}}' for j, row in enumerate(vectors[start : start + batch])
        )
        return ('{"documents":[' + docs + "]}").encode()

    async def post(start: int) -> None:
        async with sem:
            data = await asyncio.to_thread(body, start)
            async with http.post(base + "/documents", data=data, headers=h) as resp:
                job_ids.append((await check(resp, 202))["job_id"])

    t0 = time.perf_counter()
    await asyncio.gather(*(post(s) for s in starts))
    posted = time.perf_counter() - t0
    log(f"ingest: {len(starts)} requests accepted in {posted:.1f}s; waiting until searchable")
    info, _ = await common.wait_searchable(stack, http, name, job_ids, len(vectors), t0=t0)
    elapsed = time.perf_counter() - t0
    return {
        "vectors": len(vectors),
        "requests": len(starts),
        "seconds": elapsed,
        "vectors_per_s": len(vectors) / elapsed,
        "post_seconds": posted,
        "segments": info["segments"],
    }


class HttpSearcher:
    """Pre-serialised search requests against one collection (bypassing the search cache unless ``cached``)."""

    def __init__(
        self, stack: common.Stack, http: Any, name: str, *, cached: bool = False, base_url: str | None = None
    ) -> None:
        self.url = f"{base_url or stack.url}/v1/collections/{name}/search"
        self.http = http
        self.h = {**stack.headers, "Content-Type": "application/json"}
        if not cached:
            # Neither read nor fill the cache: these runs measure the uncached path, and leave the
            # cache cold for the cached run.
            self.h["Cache-Control"] = "no-cache, no-store"
        self.cache_status: list[str] = []

    async def one(self, body: bytes) -> tuple[float, list[str]]:
        t = time.perf_counter()
        async with self.http.post(self.url, data=body, headers=self.h) as resp:
            res = await check(resp, 200)
            self.cache_status.append(resp.headers.get("Cache-Status", ""))
        return time.perf_counter() - t, [r["id"] for r in res["results"]]

    async def sequential(self, bodies: list[bytes]) -> list[float]:
        return [(await self.one(b))[0] for b in bodies]

    async def concurrent(self, bodies: list[bytes], concurrency: int) -> tuple[list[float], float]:
        lat: list[float] = []
        it = iter(bodies)

        async def worker() -> None:
            for b in it:
                lat.append((await self.one(b))[0])

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return lat, time.perf_counter() - t


Threads = tuple[int, int]  # (torch threads, FAISS threads) of a floor measurement


def floor_block(kind: str, encoder: Any, index: Any, items: list[Any], threads: Threads) -> list[float]:
    import faiss
    import torch

    torch_threads, faiss_threads = threads
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
    out = []
    try:
        for item in items:
            t = time.perf_counter()
            q = encoder.encode([item]) if kind == "query" else item
            index.search(q, K)
            out.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return out


def floor_settings(kind: str, torch_threads: int, faiss_threads: int) -> list[Threads]:
    """The thread settings the floor is measured with: the fastest is the floor. On a busy host torch's
    default (every core) can be several times slower than one thread, so ``query`` tries both."""
    faiss_options = sorted({faiss_threads, 1}, reverse=True)
    torch_options = sorted({torch_threads, 1}, reverse=True) if kind == "query" else [torch_threads]
    return [(t, f) for t in torch_options for f in faiss_options]


def threads_label(threads: Threads) -> str:
    return f"torch {threads[0]}, FAISS {threads[1]}"


def ratio_verdict(http_p50: float, floor_p50: float) -> tuple[float | None, str]:
    """The ratio HTTP / floor at p50, or None with the reason it means nothing: a floor slower than the
    full HTTP path is no floor (the host was busy while it ran, or it ran with the wrong settings)."""
    if floor_p50 > http_p50:
        return None, (
            f"no ratio: the in-process floor (p50 {floor_p50 * 1000:.2f} ms) was slower than the HTTP path "
            f"(p50 {http_p50 * 1000:.2f} ms), so it is not a floor; rerun on a quieter host"
        )
    return http_p50 / floor_p50, ""


def stats(lat: list[float]) -> dict[str, float]:
    return {
        "n": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "mean_ms": sum(lat) / len(lat) * 1000,
    }


async def run_stack(
    args: argparse.Namespace,
    encoder: Any,
    index: Any,
    vectors: np.ndarray,
    queries: list[str],
    qvecs: np.ndarray,
) -> dict[str, Any]:
    stack = common.Stack(env=dict(e.split("=", 1) for e in args.stack_env), keep_data=args.keep_data)
    stack.start()
    out: dict[str, Any] = {}
    name = "bench-search"
    try:
        async with common.session(connections=args.c + 8) as http:
            await stack.wait_idle(http)
            log(f"stack idle; ingesting {len(vectors):,} vectors")
            out["ingest"] = await ingest_vectors(stack, http, name, vectors, args.batch, args.in_flight)
            log(f"ingest: {out['ingest']['vectors_per_s']:.0f} vectors/s; waiting for an idle stack")
            await stack.wait_idle(http, window_s=2.0)
            searcher = HttpSearcher(stack, http, name)
            n_items = max(args.n1, args.n32)
            items: dict[str, list[Any]] = {
                "query": [queries[i % len(queries)] for i in range(n_items)],
                "vector": [qvecs[i % len(qvecs)].reshape(1, -1) for i in range(n_items)],
            }
            bodies: dict[str, list[bytes]] = {
                "query": [json.dumps({"query": q, "k": K}).encode() for q in items["query"]],
                "vector": [('{"vector":' + vec_json(v[0]) + f',"k":{K}}}').encode() for v in items["vector"]],
            }
            # Exactness check: the service's top-k equals the flat index's top-k.
            agree = []
            for i in range(0 if args.only_cached else 20):
                _, ids = await searcher.one(bodies["vector"][i])
                _, rows = index.search(as_stored(items["vector"][i]), K)
                agree.append(len(set(ids) & {f"v{r}" for r in rows[0]}) / K)
            out["topk_agreement_vector"] = sum(agree) / len(agree) if agree else float("nan")
            for kind in () if args.only_cached else ("query", "vector"):
                floor_threads = floor_settings(kind, args.torch_threads, args.faiss_threads)
                # Warm-up (first query also makes the gateway's FAISS/torch allocate).
                await searcher.sequential(bodies[kind][:20])
                for t in floor_threads:
                    floor_block(kind, encoder, index, items[kind][:20], t)
                http1: list[float] = []
                floors: dict[Threads, list[float]] = {t: [] for t in floor_threads}
                cpu0 = cpu_gw = 0.0
                gw = stack.pids.get("gateway")
                for s in range(0, args.n1, args.block):
                    e = min(args.n1, s + args.block)
                    await asyncio.sleep(0.05)
                    for t in floor_threads:
                        floors[t] += floor_block(kind, encoder, index, items[kind][s:e], t)
                    cpu0 = common.cpu_seconds([gw]) if gw else 0.0
                    http1 += await searcher.sequential(bodies[kind][s:e])
                    cpu_gw += (common.cpu_seconds([gw]) - cpu0) if gw else 0.0
                best = min(floor_threads, key=lambda t: percentile(floors[t], 50))
                floor1 = floors[best]
                log(
                    f"{kind} c=1: HTTP p50 {percentile(http1, 50) * 1000:.2f} ms, floor p50 "
                    + ", ".join(
                        f"{percentile(floors[t], 50) * 1000:.2f} ms ({threads_label(t)})" for t in floor_threads
                    )
                )
                await stack.wait_idle(http, window_s=0.5)
                cpu0 = common.cpu_seconds([gw]) if gw else 0.0
                prof = start_profile(args, gw, f"{kind}-c{args.c}")
                self0, busy0 = common.self_cpu_seconds(), common.machine_busy_seconds()
                http32, wall32 = await searcher.concurrent(bodies[kind][: args.n32], args.c)
                client32 = common.self_cpu_seconds() - self0
                busy32 = common.machine_busy_seconds() - busy0
                stop_profile(prof)
                cpu32 = (common.cpu_seconds([gw]) - cpu0) if gw else 0.0
                log(f"{kind} c={args.c}: p50 {percentile(http32, 50) * 1000:.1f} ms, {len(http32) / wall32:.1f} req/s")
                out[kind] = {
                    "c1_http": stats(http1),
                    "c1_floor": stats(floor1),
                    "c1_floor_threads": threads_label(best),
                    "c1_floor_by_threads": {threads_label(t): stats(floors[t]) for t in floor_threads},
                    "c1_ratio_p50": ratio_verdict(percentile(http1, 50), percentile(floor1, 50))[0],
                    "c1_ratio_refused": ratio_verdict(percentile(http1, 50), percentile(floor1, 50))[1],
                    "c1_gateway_cpu_ms_per_req": cpu_gw / len(http1) * 1000,
                    f"c{args.c}_http": stats(http32),
                    f"c{args.c}_req_per_s": len(http32) / wall32,
                    f"c{args.c}_gateway_cpu_ms_per_req": cpu32 / len(http32) * 1000,
                    f"c{args.c}_gateway_cores": cpu32 / wall32,
                    f"c{args.c}_client_cores": client32 / wall32,
                    f"c{args.c}_machine_busy_cores": busy32 / wall32,
                }
                await stack.wait_idle(http, window_s=0.5)
            if args.batching_reference:
                out["batching"] = await batching_run(args, stack, http, name, bodies["query"][: args.n32])
            if args.cached_n:
                out["cached"] = await cached_run(args, stack, http, name, queries)
    finally:
        stack.stop()
        log("stack stopped")
    return out


async def batching_run(
    args: argparse.Namespace, stack: common.Stack, http: Any, name: str, bodies: list[bytes]
) -> dict[str, Any]:
    """``query`` throughput at concurrency ``args.c``: the stack's gateway (micro-batching) against a second
    gateway with ``SEMAFLOW_QUERY_BATCH_MAX=1``, loaded in turn, one at a time."""
    from startup import stack_env

    port = free_port()
    env = {
        **stack_env(stack),
        "SEMAFLOW_PORT": str(port),
        "SEMAFLOW_HOST": "127.0.0.1",
        "SEMAFLOW_QUERY_BATCH_MAX": "1",
    }
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "services.gateway"],
        env=env,
        cwd=common.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        unbatched = HttpSearcher(stack, http, name, base_url=base)
        deadline = time.monotonic() + 300
        while True:  # ready, and its query model loaded: a query search answers
            try:
                await unbatched.one(bodies[0])
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the reference gateway did not start") from None
                await asyncio.sleep(0.5)
        batched = HttpSearcher(stack, http, name)
        sides = {"batched": (batched, stack.pids.get("gateway")), "unbatched": (unbatched, proc.pid)}
        for searcher, _ in sides.values():  # warm-up
            await searcher.concurrent(bodies[: args.c * 2], args.c)
        done: dict[str, dict[str, float]] = {k: {"requests": 0, "wall": 0.0, "cpu": 0.0} for k in sides}
        for r in range(args.batching_rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for label in order:
                searcher, pid = sides[label]
                await stack.wait_idle(http, window_s=0.5)
                cpu0 = common.cpu_seconds([pid]) if pid else 0.0
                lat, wall = await searcher.concurrent(bodies, args.c)
                done[label]["requests"] += len(lat)
                done[label]["wall"] += wall
                done[label]["cpu"] += (common.cpu_seconds([pid]) - cpu0) if pid else 0.0
                log(f"batching round {r + 1} {label}: {len(lat) / wall:.1f} req/s")
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    result: dict[str, Any] = {
        label: {
            "req_per_s": d["requests"] / d["wall"],
            "gateway_cpu_ms_per_req": d["cpu"] / d["requests"] * 1000,
            "requests": d["requests"],
        }
        for label, d in done.items()
    }
    result["ratio"] = result["batched"]["req_per_s"] / result["unbatched"]["req_per_s"]
    return result


def print_batching(args: argparse.Namespace, batching: dict[str, Any]) -> bool:
    """Print the batching comparison; whether it met the target."""
    print()
    print(f"query micro-batching at c={args.c}, {args.batching_rounds} rounds each, alternating:")
    rows = [
        [label, batching[label]["requests"], batching[label]["req_per_s"], batching[label]["gateway_cpu_ms_per_req"]]
        for label in ("unbatched", "batched")
    ]
    print(table(["gateway", "requests", "req/s", "gateway CPU ms/req"], rows))
    ratio = batching["ratio"]
    if ratio < 1.0:
        print(f"  no ratio: the unbatched reference was faster ({ratio:.2f}x)  FAIL")
        return False
    ok = bool(ratio >= TARGET_BATCHING)
    print(f"  throughput ratio = {ratio:.2f}x  (target >= {TARGET_BATCHING}x)  {verdict(ok)}")
    return ok


def zipf_mix(rng: np.random.Generator, distinct: int, n: int, s: float) -> list[int]:
    """``n`` ranks in ``[0, distinct)`` drawn with probability proportional to ``1 / (rank + 1) ** s``."""
    weights = 1.0 / np.arange(1, distinct + 1) ** s
    return [int(i) for i in rng.choice(distinct, size=n, p=weights / weights.sum())]


async def cached_run(
    args: argparse.Namespace, stack: common.Stack, http: Any, name: str, queries: list[str]
) -> dict[str, Any]:
    """Zipf-distributed ``query`` searches through the cache, from cold; latency of hits and misses, hit rate."""
    distinct = min(args.zipf_distinct, len(queries))
    ranks = zipf_mix(np.random.default_rng(args.seed + 2), distinct, args.cached_n, args.zipf_s)
    bodies = [json.dumps({"query": queries[r], "k": K}).encode() for r in ranks]
    searcher = HttpSearcher(stack, http, name, cached=True)
    async with http.get(stack.url + "/metrics") as resp:
        before = cache_counters(await resp.text())
    latencies = await searcher.sequential(bodies)
    async with http.get(stack.url + "/metrics") as resp:
        after = cache_counters(await resp.text())
    hits = [lat for lat, st in zip(latencies, searcher.cache_status, strict=True) if st.endswith("; hit")]
    l1 = sum(1 for st in searcher.cache_status if st.startswith("semaflow-l1"))
    misses = [lat for lat, st in zip(latencies, searcher.cache_status, strict=True) if not st.endswith("; hit")]
    result = {
        "requests": len(bodies),
        "distinct_queries": len(set(ranks)),
        "zipf_s": args.zipf_s,
        "hit_rate": len(hits) / len(bodies),
        "l1_hits": l1,
        "l2_hits": len(hits) - l1,
        "hit": stats(hits) if hits else {},
        "miss": stats(misses) if misses else {},
        "metrics_delta": {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after},
    }
    log(
        f"cached run: hit rate {result['hit_rate']:.1%}, hit p50 {result['hit'].get('p50_ms', float('nan')):.2f} ms, "
        f"miss p50 {result['miss'].get('p50_ms', float('nan')):.2f} ms"
    )
    return result


def cache_counters(metrics_text: str) -> dict[str, float]:
    """``level/result`` -> count of the gateway's search-cache counters."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("semaflow_search_cache_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            level = labels.split('level="')[1].split('"')[0]
            result = labels.split('result="')[1].split('"')[0]
            out[f"{level}/{result}"] = float(value)
    return out


def start_profile(args: argparse.Namespace, pid: int | None, label: str) -> subprocess.Popen[bytes] | None:
    if not args.profile or pid is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    out = args.profile / f"gateway-{label}.txt"
    cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--threads", "-o", str(out)]
    if args.profile_native:
        cmd.append("--native")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(__import__("signal").SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="SciFact folder (for query texts)")
    parser.add_argument("--vectors", type=int, default=100_000, help="collection size (default 100,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="vectors per ingest request (default 1,000)")
    parser.add_argument("--in-flight", type=int, default=2, help="ingest requests in flight (default 2)")
    parser.add_argument("--n1", type=int, default=300, help="requests per kind at concurrency 1 (default 300)")
    parser.add_argument("--n32", type=int, default=2_000, help="requests per kind at high concurrency (default 2,000)")
    parser.add_argument("-c", type=int, default=32, help="high concurrency level (default 32)")
    parser.add_argument("--block", type=int, default=50, help="alternating floor/HTTP block size at c=1 (default 50)")
    parser.add_argument("--seed", type=int, default=20240601, help="RNG seed for the vectors")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy the gateway at high c")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--stack-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the stack"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data dir and log")
    parser.add_argument(
        "--cached-n", type=int, default=3_000, help="requests of the cached run (default 3,000; 0: none)"
    )
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of the cached run (default 1.1)")
    parser.add_argument("--zipf-distinct", type=int, default=1_000, help="distinct queries of the cached run")
    parser.add_argument(
        "--batching-reference", action="store_true", help="compare query micro-batching with a gateway without it"
    )
    parser.add_argument("--batching-rounds", type=int, default=3, help="rounds per side of the batching comparison")
    parser.add_argument(
        "--only-cached", action="store_true", help="skip the uncached runs and the floor (just ingest + cached run)"
    )
    args = parser.parse_args(argv)

    import faiss
    import torch

    from shared.index.embedding import Encoder

    queries = common.load_queries(args.data)
    rng = np.random.default_rng(args.seed)
    vectors = unit_vectors(rng, args.vectors)
    qvecs = as_stored(unit_vectors(np.random.default_rng(args.seed + 1), max(args.n1, args.n32)))
    # The floor, built before the stack starts so the two never compete for the cores.
    log("loading the model and building the floor index in-process")
    encoder = Encoder.load()
    args.faiss_threads = faiss.omp_get_max_threads()
    args.torch_threads = torch.get_num_threads()
    index = faiss.IndexFlatIP(DIM)
    index.add(as_stored(vectors))
    encoder.encode(queries[:8])

    out = asyncio.run(run_stack(args, encoder, index, vectors, queries, qvecs))

    c = args.c
    print()
    print(
        f"semaflow search benchmark: {args.vectors:,} vectors in {out['ingest']['segments']} segments, k={K}; "
        f"{args.n1} requests at c=1, {args.n32} at c={c}"
    )
    agreement = (
        "" if args.only_cached else f"; top-{K} agreement with the flat index: {out['topk_agreement_vector']:.3f}"
    )
    print(
        f"  ingest: {out['ingest']['vectors']:,} vectors in {out['ingest']['seconds']:.1f}s "
        f"({out['ingest']['vectors_per_s']:.0f}/s){agreement}"
    )
    print()
    kinds = [k for k in ("query", "vector") if k in out]
    rows = []
    for kind in kinds:
        r = out[kind]
        h1, h32 = r["c1_http"], r[f"c{c}_http"]
        for t, ft in r["c1_floor_by_threads"].items():
            mark = " *" if t == r["c1_floor_threads"] else ""
            rows.append(
                [f"{kind}: floor, {t}{mark}", "1", ft["p50_ms"], ft["p90_ms"], ft["p99_ms"], ft["mean_ms"], "-", "-"]
            )  # fmt: skip
        rows.append(
            [f"{kind}: HTTP", "1", h1["p50_ms"], h1["p90_ms"], h1["p99_ms"], h1["mean_ms"], "-",
             r["c1_gateway_cpu_ms_per_req"]]
        )  # fmt: skip
        rows.append(
            [f"{kind}: HTTP", str(c), h32["p50_ms"], h32["p90_ms"], h32["p99_ms"], h32["mean_ms"],
             r[f"c{c}_req_per_s"], r[f"c{c}_gateway_cpu_ms_per_req"]]
        )  # fmt: skip
    if rows:
        print(table(["search", "conc", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s", "gateway CPU ms/req"], rows))
        print()
    for kind in kinds:
        r = out[kind]
        print(
            f"  {kind} c={c}: gateway {r[f'c{c}_gateway_cores']:.2f} cores, benchmark client "
            f"{r[f'c{c}_client_cores']:.2f} cores, whole machine {r[f'c{c}_machine_busy_cores']:.2f} cores busy"
        )
    if kinds:
        print("  * = the floor used for the ratio (the fastest of the torch and FAISS thread settings tried)")
    if args.stack_env:
        print(f"  stack environment: {' '.join(args.stack_env)}")
    print()
    if kinds:
        print("targets (p50 HTTP / p50 floor at concurrency 1):")
    ok = True
    for kind in kinds:
        ratio = out[kind]["c1_ratio_p50"]
        if ratio is None:
            ok = False
            print(f"  {kind:6s} {out[kind]['c1_ratio_refused']}  INVALID")
            continue
        ok = ok and ratio <= TARGET_RATIO
        print(f"  {kind:6s} ratio = {ratio:.2f}x  (target <= {TARGET_RATIO}x)  {verdict(ratio <= TARGET_RATIO)}")
    if "batching" in out:
        ok = print_batching(args, out["batching"]) and ok
    if "cached" in out:
        ok = print_cached(args, out["cached"]) and ok
    common.write_json(
        args.json,
        {**out, "targets": {"c1_ratio_p50_max": TARGET_RATIO, "cached_hit_rate_min": TARGET_HIT_RATE},
         "args": {k: str(v) for k, v in vars(args).items()},
         "environment": common.environment()},
    )  # fmt: skip
    return 0 if ok else 1


def print_cached(args: argparse.Namespace, cached: dict[str, Any]) -> bool:
    """Print the cached run's table; whether its hit rate met the target."""
    hit, miss = cached["hit"], cached["miss"]
    print()
    print(
        f"cached run: {cached['requests']:,} query searches, Zipf s={cached['zipf_s']} over "
        f"{args.zipf_distinct:,} queries ({cached['distinct_queries']:,} distinct drawn), c=1, cold cache"
    )
    print(
        table(
            ["answer", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms"],
            [
                ["cache hit", hit.get("n", 0), hit.get("p50_ms", float("nan")), hit.get("p90_ms", float("nan")),
                 hit.get("p99_ms", float("nan")), hit.get("mean_ms", float("nan"))],
                ["miss (encode + FAISS)", miss.get("n", 0), miss.get("p50_ms", float("nan")),
                 miss.get("p90_ms", float("nan")), miss.get("p99_ms", float("nan")), miss.get("mean_ms", float("nan"))],
            ],
        )
    )  # fmt: skip
    print(
        f"  L1 hits {cached['l1_hits']:,}, L2 hits {cached['l2_hits']:,}; gateway counters: {cached['metrics_delta']}"
    )
    hit_ok = bool(cached["hit_rate"] >= TARGET_HIT_RATE)
    print(f"  hit rate = {cached['hit_rate']:.1%}  (target >= {TARGET_HIT_RATE:.0%})  {verdict(hit_ok)}")
    return hit_ok


if __name__ == "__main__":
    sys.exit(main())
