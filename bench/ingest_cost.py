"""Ingest of precomputed vectors: the gateway's CPU per 1,000-vector POST and the bytes stored per vector.

Run by hand (not pytest)::

    .venv/bin/python bench/ingest_cost.py                          # this tree
    .venv/bin/python bench/ingest_cost.py --reference-rev HEAD~1   # and that revision, in the same run

Per tree (this one, and ``--reference-rev`` exported with ``git archive``, whose ``semaflow up`` is
started from the exported folder so that its own code runs), one ``semaflow up`` stack; per vector
form, a collection of its own and ``--posts`` POSTs of ``--batch`` documents with precomputed vectors
(random float32 vectors of unit length), one at a time, the first a warm-up:

* ``json6``: JSON arrays with 6 decimals (as ``bench/search.py`` sends);
* ``json``: JSON arrays of the float32 values as Python writes them (``v.tolist()``: up to 17 digits);
* ``b64``: ``vector_b64``, base64 of the little-endian float32 bytes.

Measured per POST: the CPU time of the gateway's event-loop thread and of the whole gateway process
(all threads: body parse, validation and batch encoding run on worker threads) from ``/proc``, and the
wall time; then the bytes of every object under the collection's ``batches/`` in the stack's local
store, per vector; and the gateway's peak RSS so far. CPU time is what to compare on a shared machine:
wall time moves with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import check, log, percentile, table
from ingest_loop import thread_cpu_seconds

DIM = common.DIM
FORMS = ("json6", "json", "b64")


def body(vectors: np.ndarray, first_id: int, form: str) -> bytes:
    """An ingest body of ``vectors`` in one of :data:`FORMS`."""
    if form == "b64":
        docs: list[dict[str, Any]] = [
            {"id": f"v{first_id + i}", "vector_b64": base64.b64encode(row.astype("<f4").tobytes()).decode()}
            for i, row in enumerate(vectors)
        ]
        return json.dumps({"documents": docs}).encode()
    if form == "json":
        docs = [{"id": f"v{first_id + i}", "vector": row.tolist()} for i, row in enumerate(vectors)]
        return json.dumps({"documents": docs}).encode()
    parts = (
        f'{{"id":"v{first_id + i}","vector":[' + ",".join(f"{x:.6f}" for x in row.tolist()) + "]}"
        for i, row in enumerate(vectors)
    )
    return ('{"documents":[' + ",".join(parts) + "]}").encode()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (``VmHWM``), in MiB."""
    with open(f"/proc/{pid}/status") as fh:
        line = next(line for line in fh if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def stored_bytes(data_dir: Path, collection: str) -> tuple[int, int]:
    """(bytes, objects) under ``batches/`` of ``collection`` in the stack's local store."""
    batches = [p.stat().st_size for p in data_dir.rglob("batches/*") if p.is_file() and f"/{collection}/" in str(p)]
    return sum(batches), len(batches)


async def measure(tree: Path, args: argparse.Namespace, bodies: dict[str, list[bytes]]) -> dict[str, dict[str, float]]:
    """Per form: gateway CPU (loop thread and whole process) and wall per POST, stored bytes per vector."""
    out: dict[str, dict[str, float]] = {}
    stack = common.Stack(env=dict(e.split("=", 1) for e in args.stack_env), cwd=tree).start()
    try:
        async with common.session(connections=4) as http:
            await stack.wait_idle(http)
            gw = stack.pids["gateway"]
            h = {**stack.headers, "Content-Type": "application/json"}
            for form in args.forms:
                name = f"bench-{form}"
                base = f"{stack.url}/v1/collections/{name}"
                async with http.put(base, headers=h) as resp:
                    await check(resp, 200, 201)
                loop_cpu, all_cpu, wall = [], [], []
                for n, raw in enumerate(bodies[form]):
                    main0, all0, t0 = thread_cpu_seconds(gw, gw), common.cpu_seconds([gw]), time.perf_counter()
                    async with http.post(base + "/documents", data=raw, headers=h) as resp:
                        await check(resp, 202)
                    if n:  # the first is a warm-up (first-use imports, allocations)
                        wall.append(time.perf_counter() - t0)
                        loop_cpu.append(thread_cpu_seconds(gw, gw) - main0)
                        all_cpu.append(common.cpu_seconds([gw]) - all0)
                assert stack.data_dir is not None
                size, objects = stored_bytes(stack.data_dir, name)
                out[form] = {
                    "body_bytes": len(bodies[form][0]),
                    "loop_cpu_ms": sum(loop_cpu) / len(loop_cpu) * 1000,
                    "gateway_cpu_ms": sum(all_cpu) / len(all_cpu) * 1000,
                    "wall_p50_ms": percentile(wall, 50) * 1000,
                    "stored_bytes_per_vector": size / (len(bodies[form]) * args.batch),
                    "batch_objects": objects,
                    "gateway_peak_rss_mib": peak_rss_mib(gw),  # so far: this form and those before it
                }
                log(f"{tree.name} {form}: gateway {out[form]['gateway_cpu_ms']:.1f} ms CPU per POST")
                await stack.wait_idle(http, window_s=2.0)  # the embedder and indexer finish before the next form
                async with http.get(base, headers=h) as resp:
                    indexed = (await check(resp, 200))["documents"]
                if indexed != len(bodies[form]) * args.batch:  # every vector went through the pipeline
                    raise RuntimeError(f"{form}: {indexed} documents indexed of {len(bodies[form]) * args.batch}")
    finally:
        stack.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=11, help="POSTs per form, the first a warm-up (default 11)")
    parser.add_argument("--batch", type=int, default=1_000, help="documents per POST (default 1,000)")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--reference-rev", default=None, help="also measure the stack of this git revision")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results")
    parser.add_argument("--stack-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((args.posts * args.batch, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bodies = {
        form: [body(vectors[i * args.batch : (i + 1) * args.batch], i * args.batch, form) for i in range(args.posts)]
        for form in args.forms
    }
    root = Path(tempfile.mkdtemp(prefix="semaflow-ingest-cost-"))
    try:
        trees = [("this tree", common.REPO)]
        if args.reference_rev:
            trees.append((f"rev {args.reference_rev}", common.export_tree(args.reference_rev, root)))
        results = {label: asyncio.run(measure(tree, args, bodies)) for label, tree in trees}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"ingest of precomputed vectors: {args.posts - 1} POSTs of {args.batch:,} vectors per form, one at a time")
    rows = [
        [
            label,
            form,
            r["body_bytes"] / 1e6,
            r["loop_cpu_ms"],
            r["gateway_cpu_ms"],
            r["wall_p50_ms"],
            r["stored_bytes_per_vector"],
            r["batch_objects"],
        ]
        for label, per_form in results.items()
        for form, r in per_form.items()
    ]
    headers = ["stack", "form", "body MB", "loop CPU ms", "gateway CPU ms", "wall p50 ms", "stored B/vec", "objects"]
    print(table(headers, rows))
    for label, per_form in results.items():
        peaks = ", ".join(f"after {form} {r['gateway_peak_rss_mib']:.0f}" for form, r in per_form.items())
        print(f"{label}: gateway peak RSS (MiB, VmHWM, growing over the forms in this order): {peaks}")
    if len(results) == 2:
        (new_label, new), (old_label, old) = results.items()
        print()
        print(f"{old_label} -> {new_label} (same run, same machine), per POST and per stored vector:")
        for form in args.forms:
            for key, what in (("gateway_cpu_ms", "gateway CPU ms"), ("stored_bytes_per_vector", "stored B/vec")):
                before, after = old[form][key], new[form][key]
                print(f"  {form:5s} {what:15s} {before:10.1f} -> {after:10.1f}  (before / after: {before / after:.2f})")
    common.write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
