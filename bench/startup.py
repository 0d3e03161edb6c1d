"""Gateway start-up benchmark: from process start until ``/readyz`` answers 200.

Run by hand (not pytest)::

    .venv/bin/python bench/startup.py                  # empty stack, then 100,000 vectors
    .venv/bin/python bench/startup.py --vectors 20000 --repeats 3
    .venv/bin/python bench/startup.py --vectors 1000000 --direct 100000 --target 2   # a million vectors

A ``semaflow up`` stack provides Redis and the object store. Beside its own gateway, the
benchmark starts extra gateway processes (``python -m services.gateway`` on a free port, the
stack's environment) and times each until it is ready: Redis reachable and the latest index of
every collection loaded (the gateway never builds an index; it loads the published segments).
Measured with no collection, then with one collection of ``--vectors`` vectors. The reference
is the bare cost of starting Python and importing the gateway's modules, measured in the same run.
Target: ready in < 1 s (``--target``; < 2 s at a million vectors).

``--direct N`` fills the collection faster than the HTTP path can (a million vectors through the API
take about seven minutes here): batches of N vectors with ids and metadata are staged in the stack's
object store as the embedder leaves them, and published by the indexer's own ``Publisher`` in this
process, so the segments, manifests and Redis records are those the indexer writes (one N-vector
segment per batch; the stack's indexer may merge them meanwhile, as it would).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import log, percentile, table, verdict
from search import ingest_vectors, unit_vectors

from semaflow.redis_server import free_port

TARGET_S = 1.0


def stack_env(stack: common.Stack) -> dict[str, str]:
    """The environment ``semaflow up`` gave its gateway (Redis URL, data dir...)."""
    raw = Path(f"/proc/{stack.pids['gateway']}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def time_import() -> float:
    """Seconds to start Python and import the gateway's modules (no Redis, no index)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import services.gateway.main"], check=True, cwd=common.REPO)
    return time.perf_counter() - t


def time_gateway(env: dict[str, str], timeout_s: float = 60.0) -> tuple[float, dict[str, Any]]:
    """Start one extra gateway; seconds from spawn until ``/readyz`` is 200, and its checks."""
    import json

    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    child_env = {**env, "SEMAFLOW_PORT": str(port), "SEMAFLOW_HOST": "127.0.0.1"}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"],
        env=child_env,
        cwd=common.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - t < timeout_s:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t, json.loads(resp.read())
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}")
            time.sleep(0.01)
        raise RuntimeError("gateway not ready in time")
    finally:
        proc.terminate()
        proc.wait(30)


def measure(env: dict[str, str], repeats: int) -> dict[str, Any]:
    samples = [time_gateway(env)[0] for _ in range(repeats)]
    return {"n": repeats, "samples_s": samples, "p50_s": percentile(samples, 50), "max_s": max(samples)}


def fill_direct(stack: common.Stack, env: dict[str, str], vectors: np.ndarray, batch: int) -> dict[str, Any]:
    """Stage batches of ``batch`` vectors and publish each as one segment with the indexer's Publisher."""
    import json

    import redis

    from services.indexer.publishing import Publisher
    from shared.config import Settings
    from shared.index.documents import Document, encode_batch, encode_vectors, put_batch
    from shared.index.storage import open_store
    from shared.records import catalog

    with urllib.request.urlopen(
        urllib.request.Request(f"{stack.url}/v1/collections/{NAME}", method="PUT", headers=stack.headers)
    ) as resp:
        assert resp.status in (200, 201), resp.status
    os.environ.update({k: v for k, v in env.items() if k.startswith("SEMAFLOW_")})  # the stack's own settings
    settings = Settings()
    client = redis.Redis.from_url(settings.require_redis_url())
    store = open_store(settings)
    with urllib.request.urlopen(urllib.request.Request(f"{stack.url}/v1/me", headers=stack.headers)) as resp:
        tenant = json.loads(resp.read())["tenant"]
    collection = catalog.get(client, tenant, NAME)
    assert collection is not None
    publisher = Publisher(client, store)
    t0 = time.perf_counter()
    for n, start in enumerate(range(0, len(vectors), batch)):
        part = vectors[start : start + batch]
        docs = [
            Document(id=f"v{start + j:08d}", text=f"document {start + j}", metadata={"topic": f"t{(start + j) % 50}"})
            for j in range(len(part))
        ]
        batch_id = f"direct-{n:04d}"
        put_batch(store, collection.ref, batch_id, encode_batch(docs))  # as the gateway stores it
        store.put(collection.ref.vectors_key(batch_id), encode_vectors(part))  # as the embedder leaves it
        publisher.add_batch(collection, batch_id, write_seq=n + 1)
        log(f"published {start + len(part):,} vectors")
    segments = len(range(0, len(vectors), batch))
    return {"vectors": len(vectors), "segments": segments, "seconds": time.perf_counter() - t0}


NAME = "bench-startup"


async def fill(stack: common.Stack, vectors: np.ndarray) -> dict[str, Any]:
    async with common.session() as http:
        await stack.wait_idle(http)
        return await ingest_vectors(stack, http, NAME, vectors, 1_000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000, help="collection size (default 100,000)")
    parser.add_argument("--repeats", type=int, default=5, help="gateway starts per measurement (default 5)")
    parser.add_argument("--direct", type=int, default=0, metavar="N", help="publish batches of N vectors in-process")
    parser.add_argument("--target", type=float, default=TARGET_S, help=f"ready target in seconds (default {TARGET_S})")
    parser.add_argument(
        "--stack-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the stack"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)

    stack = common.Stack(env=dict(e.split("=", 1) for e in args.stack_env)).start()
    out: dict[str, Any] = {}
    try:
        env = stack_env(stack)
        asyncio.run(_idle(stack))
        out["import_s"] = [time_import() for _ in range(args.repeats)]
        log("gateway start with no collection")
        out["empty"] = measure(env, args.repeats)
        log(f"ingesting {args.vectors:,} vectors")
        vectors = unit_vectors(np.random.default_rng(7), args.vectors)
        if args.direct:
            out["ingest"] = fill_direct(stack, env, vectors, args.direct)
        else:
            out["ingest"] = asyncio.run(fill(stack, vectors))
        del vectors
        asyncio.run(_idle(stack))
        log(f"gateway start with {args.vectors:,} vectors")
        out["loaded"] = measure(env, args.repeats)
        _, checks = time_gateway(env)
        out["loaded_checks"] = checks
    finally:
        stack.stop()

    ref = percentile(out["import_s"], 50)
    print()
    print(f"semaflow gateway start-up: spawn -> /readyz 200, {args.repeats} starts each ({os.cpu_count()} CPUs)")
    print()
    rows = [
        ["reference: python -c 'import services.gateway.main'", ref, max(out["import_s"]), 1.0],
        ["gateway ready, no collection", out["empty"]["p50_s"], out["empty"]["max_s"], out["empty"]["p50_s"] / ref],
        [
            f"gateway ready, {args.vectors:,} vectors in {out['ingest']['segments']} segments",
            out["loaded"]["p50_s"],
            out["loaded"]["max_s"],
            out["loaded"]["p50_s"] / ref,
        ],
    ]
    print(table(["measurement", "p50 s", "max s", "x reference"], rows))
    target = args.target
    ok = out["empty"]["p50_s"] < target and out["loaded"]["p50_s"] < target
    print()
    print("targets:")
    for label in ("empty", "loaded"):
        p50 = out[label]["p50_s"]
        print(f"  {label:6s} ready p50 = {p50:.3f}s  (target < {target} s)  {verdict(p50 < target)}")
    common.write_json(args.json, {**out, "environment": common.environment()})
    return 0 if ok else 1


async def _idle(stack: common.Stack) -> None:
    async with common.session() as http:
        await stack.wait_idle(http)


if __name__ == "__main__":
    sys.exit(main())
