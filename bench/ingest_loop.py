"""Ingest on the gateway's event loop: loop CPU per 1,000-vector POST, and searches during a burst of them.

Run by hand (not pytest)::

    .venv/bin/python bench/ingest_loop.py                    # JSON vectors
    .venv/bin/python bench/ingest_loop.py --form b64         # vector_b64 (base64 float32)
    .venv/bin/python bench/ingest_loop.py --threshold        # in-process: where decoding off the loop pays

Against other code (an older commit, say): run this file from that worktree, so ``semaflow up`` starts
that code (``common.Stack`` runs it from the folder above ``bench/``)::

    cp bench/ingest_loop.py bench/common.py /path/to/old/bench/ && cd /path/to/old && python bench/ingest_loop.py

1. Loop CPU: ``--posts`` POSTs of ``--batch`` documents with precomputed vectors, one at a time, on the
   idle stack. The gateway's event loop runs on its main thread, so that thread's CPU time
   (``/proc/PID/task/PID/stat``) per POST is the time the loop could not answer anyone else; the
   gateway's whole CPU (all threads) per POST is shown beside it.
2. Searches during a burst: ``vector`` searches at concurrency 1, first on the idle stack, then while
   ``--burst`` such POSTs arrive (``--in-flight`` at a time); p50/p90/p99 of each.

``--threshold`` (no stack): the loop time of handing a body to a worker thread (``asyncio.to_thread``,
measured as the loop thread's CPU) against decoding it on the loop, for bodies of growing size; the
gateway decodes on the loop below the size where the two cross.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import check, log, percentile, table

DIM = common.DIM


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User+system CPU seconds of one thread."""
    with open(f"/proc/{pid}/task/{tid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / common.CLK_TCK


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.round(v, 6).astype(np.float32)


def ingest_body(vectors: np.ndarray, first_id: int, form: str) -> bytes:
    """An ingest body: JSON arrays with 6 decimals (as bench/search.py sends), or ``vector_b64``."""
    if form == "b64":
        docs = [
            {"id": f"v{first_id + i}", "vector_b64": base64.b64encode(row.astype("<f4").tobytes()).decode()}
            for i, row in enumerate(vectors)
        ]
        return json.dumps({"documents": docs}).encode()
    parts = (
        f'{{"id":"v{first_id + i}","vector":[' + ",".join(f"{x:.6f}" for x in row.tolist()) + "]}"
        for i, row in enumerate(vectors)
    )
    return ('{"documents":[' + ",".join(parts) + "]}").encode()


def stats(lat: list[float]) -> list[float]:
    return [len(lat), percentile(lat, 50) * 1000, percentile(lat, 90) * 1000, percentile(lat, 99) * 1000]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n_bodies = args.posts + args.burst
    vectors = unit_vectors(rng, args.batch * n_bodies)
    log(f"building {n_bodies} bodies of {args.batch} documents ({args.form})")
    bodies = [
        ingest_body(vectors[i * args.batch : (i + 1) * args.batch], i * args.batch, args.form) for i in range(n_bodies)
    ]
    probe = unit_vectors(np.random.default_rng(args.seed + 1), 64)
    search_bodies = [json.dumps({"vector": row.tolist(), "k": 10}).encode() for row in probe]
    out: dict[str, Any] = {"body_bytes": len(bodies[0]), "form": args.form, "batch": args.batch}

    stack = common.Stack(env=dict(e.split("=", 1) for e in args.stack_env)).start()
    try:
        async with common.session(connections=args.in_flight + 4) as http:
            await stack.wait_idle(http)
            base = f"{stack.url}/v1/collections/bench-loop"
            h = {**stack.headers, "Content-Type": "application/json"}
            async with http.put(base, headers=h) as resp:
                await check(resp, 200, 201)
            gw = stack.pids["gateway"]

            async def post(body: bytes) -> None:
                async with http.post(base + "/documents", data=body, headers=h) as resp:
                    await check(resp, 202)

            # 1. Loop CPU per POST, one at a time.
            await post(bodies[0])  # warm-up (first-use imports, allocations)
            loop_cpu, all_cpu, wall = [], [], []
            for body in bodies[1 : args.posts]:
                main0, all0, t0 = thread_cpu_seconds(gw, gw), common.cpu_seconds([gw]), time.perf_counter()
                await post(body)
                wall.append(time.perf_counter() - t0)
                loop_cpu.append(thread_cpu_seconds(gw, gw) - main0)
                all_cpu.append(common.cpu_seconds([gw]) - all0)
            out["loop_cpu_ms_per_post"] = sum(loop_cpu) / len(loop_cpu) * 1000
            out["gateway_cpu_ms_per_post"] = sum(all_cpu) / len(all_cpu) * 1000
            out["post_wall_p50_ms"] = percentile(wall, 50) * 1000
            log(f"loop CPU {out['loop_cpu_ms_per_post']:.1f} ms per POST; waiting for an idle stack")
            await stack.wait_idle(http, window_s=2.0)

            # 2. Searches on the idle stack, then during a burst.
            async def search(i: int) -> float:
                t0 = time.perf_counter()
                async with http.post(base + "/search", data=search_bodies[i % len(search_bodies)], headers=h) as r:
                    await check(r, 200)
                return time.perf_counter() - t0

            idle = [await search(i) for i in range(args.searches)]
            burst_done = asyncio.Event()
            sem = asyncio.Semaphore(args.in_flight)

            async def limited(body: bytes) -> None:
                async with sem:
                    await post(body)

            async def burst() -> None:
                await asyncio.gather(*(limited(b) for b in bodies[args.posts :]))
                burst_done.set()

            during: list[float] = []
            task = asyncio.create_task(burst())
            t_burst = time.perf_counter()
            i = 0
            while not burst_done.is_set():
                during.append(await search(i))
                i += 1
            await task
            out["burst_seconds"] = time.perf_counter() - t_burst
            out["search_idle"] = stats(idle)
            out["search_during_burst"] = stats(during)
    finally:
        stack.stop()
    return out


async def threshold() -> list[list[Any]]:
    """Loop-thread CPU of decoding bodies on the loop vs handing them to a thread, by body size."""
    from services.gateway.http.bodies import decode_body
    from shared.api.schemas import IngestRequest

    rows = []
    rng = np.random.default_rng(1)
    for docs, form in [(1, "text"), (4, "text"), (16, "text"), (1, "json"), (4, "json"), (16, "json"), (64, "json")]:
        if form == "text":
            payload = {"documents": [{"id": f"d{i}", "text": "a short document " * 20} for i in range(docs)]}
            raw = json.dumps(payload).encode()
        else:
            raw = ingest_body(unit_vectors(rng, docs), 0, "json")
        n = 200
        t0 = time.thread_time()
        for _ in range(n):
            decode_body(raw, IngestRequest, 32)
        inline = (time.thread_time() - t0) / n
        t0 = time.thread_time()
        for _ in range(n):
            await asyncio.to_thread(decode_body, raw, IngestRequest, 32)
        handed = (time.thread_time() - t0) / n
        rows.append([f"{docs} {form}", len(raw), inline * 1e6, handed * 1e6])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--form", choices=("json", "b64"), default="json", help="how vectors travel (default json)")
    parser.add_argument("--batch", type=int, default=1_000, help="documents per POST (default 1,000)")
    parser.add_argument("--posts", type=int, default=11, help="POSTs measured one at a time (first is warm-up)")
    parser.add_argument("--burst", type=int, default=20, help="POSTs of the burst (default 20)")
    parser.add_argument("--in-flight", type=int, default=4, help="burst POSTs in flight (default 4)")
    parser.add_argument("--searches", type=int, default=200, help="searches on the idle stack (default 200)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--threshold", action="store_true", help="only the in-process on/off-loop comparison")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results")
    parser.add_argument("--stack-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    if args.threshold:
        rows = asyncio.run(threshold())
        print(table(["body", "bytes", "on the loop µs", "to_thread, loop side µs"], rows))
        return 0

    out = asyncio.run(run(args))
    print()
    print(
        f"ingest on the event loop: {out['batch']:,} vectors per POST as {out['form']} "
        f"({out['body_bytes'] / 1e6:.2f} MB per body)"
    )
    print(
        f"  event-loop CPU per POST {out['loop_cpu_ms_per_post']:.1f} ms; gateway CPU (all threads) "
        f"{out['gateway_cpu_ms_per_post']:.1f} ms; POST p50 {out['post_wall_p50_ms']:.1f} ms"
    )
    print()
    print(f"vector searches at c=1, idle and during a burst of {args.burst} POSTs ({args.in_flight} in flight):")
    print(
        table(
            ["when", "n", "p50 ms", "p90 ms", "p99 ms"],
            [["idle", *out["search_idle"]], ["during burst", *out["search_during_burst"]]],
        )
    )
    common.write_json(args.json, {**out, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
