"""Gateway start-up benchmark: from process start until ``/readyz`` answers 200.

Run by hand (not pytest)::

    .venv/bin/python bench/startup.py                  # empty stack, then 100,000 vectors
    .venv/bin/python bench/startup.py --vectors 20000 --repeats 3

A ``semaflow up`` stack provides Redis and the object store. Beside its own gateway, the
benchmark starts extra gateway processes (``python -m services.gateway`` on a free port, the
stack's environment) and times each until it is ready: Redis reachable and the latest index of
every collection loaded (the gateway never builds an index; it loads the published segments).
Measured with no collection, then with one collection of ``--vectors`` vectors. The reference
is the bare cost of starting Python and importing the gateway's modules, measured in the same run.
Target: ready in < 1 s.
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

    port = common.free_port()
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


async def fill(stack: common.Stack, vectors: np.ndarray) -> dict[str, Any]:
    async with common.session() as http:
        await stack.wait_idle(http)
        return await ingest_vectors(stack, http, "bench-startup", vectors, 1_000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000, help="collection size (default 100,000)")
    parser.add_argument("--repeats", type=int, default=5, help="gateway starts per measurement (default 5)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)

    stack = common.Stack().start()
    out: dict[str, Any] = {}
    try:
        env = stack_env(stack)
        asyncio.run(_idle(stack))
        out["import_s"] = [time_import() for _ in range(args.repeats)]
        log("gateway start with no collection")
        out["empty"] = measure(env, args.repeats)
        log(f"ingesting {args.vectors:,} vectors")
        out["ingest"] = asyncio.run(fill(stack, unit_vectors(np.random.default_rng(7), args.vectors)))
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
    ok = out["empty"]["p50_s"] < TARGET_S and out["loaded"]["p50_s"] < TARGET_S
    print()
    print("targets:")
    for label in ("empty", "loaded"):
        p50 = out[label]["p50_s"]
        print(f"  {label:6s} ready p50 = {p50:.3f}s  (target < {TARGET_S} s)  {verdict(p50 < TARGET_S)}")
    common.write_json(args.json, {**out, "environment": common.environment()})
    return 0 if ok else 1


async def _idle(stack: common.Stack) -> None:
    async with common.session() as http:
        await stack.wait_idle(http)


if __name__ == "__main__":
    sys.exit(main())
