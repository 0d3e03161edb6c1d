"""Ingest benchmark: raw model throughput vs. the whole pipeline, and ingest->searchable latency.

Run by hand (not pytest)::

    .venv/bin/python bench/ingest.py                 # 10,000 documents (full size)
    .venv/bin/python bench/ingest.py --docs 2000     # quick check
    .venv/bin/python bench/ingest.py --docs 2000 --texts claims --repeats 0 --raw-after
    .venv/bin/python bench/ingest.py --json bench/results/ingest.json

(a) The model alone on the corpus in this process, measured while no stack runs, once per backend of
    ``--raw-backends`` (default torch, then OpenVINO; ``--raw-after`` measures each again after the
    stack, in reverse order, and the figures use the means): torch is ``SentenceTransformer.encode``,
    OpenVINO ``Encoder.encode`` as the embedder runs it, each called with ``--batch`` documents at a
    time, the batches the stack's jobs get.
(b) The same documents through ``semaflow up`` (1,000-document batches): from the first POST until
    every job has succeeded, the collection counts every document, and a search answers from
    that index version. Targets: b/a >= 0.98 against (a) of the stack's own backend, and, when the
    stack runs OpenVINO, b >= 1.8x raw torch's docs/s. Each ratio is refused when the stack's own
    backend alone came out slower than the stack (the machine's load moved between the runs).
    CPU per document (the whole stack's, and the embedder process's) is printed against each raw
    backend's: other load on the machine does not move it. Target: (a)'s CPU per document with the
    stack's own backend >= 0.98 of the whole stack's (refused where (a) spent more than the stack).
    The machine's speed drifts by several per cent over minutes; ``--rounds N`` runs the stack N times, each
    followed by (a) again, prints each run's ratios against the (a) runs just before and after it, and pools
    every run for the verdicts::

        .venv/bin/python bench/ingest.py --docs 5000 --repeats 0 --raw-after --raw-backends openvino --rounds 3

``--texts claims`` sends SciFact's claims (one sentence, ~22 tokens) instead of its abstracts (title +
abstract, ~240 tokens, most truncated at 256): the model's cost per document, and each backend's
share of it, differ with the length.
(c) Latency of one 10-document batch from POST until a vector search finds it, on the idle
    stack, repeated (new ids and texts each time). Target: p50 <= 2 s.

``--mode cli`` compares, on one stack in one run, (b) with (d): the same documents written to a JSONL
file and sent by ``semaflow ingest FILE --wait`` (the CLI on the Python SDK, with its resumable progress
file), from the command's start until every document is searchable. Target: d/b >= 0.97. Each line also
shows CPU seconds per document (the stack's, and the client's: this process for (b), the CLI process for
(d)). The two runs alternate (b, d, b, d ... with ``--rounds``); the ratio uses the means::

    .venv/bin/python bench/ingest.py --mode cli --docs 300 --batch 100
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common
from common import check, log, percentile, table, verdict

# (a) must run this checkout's code, as the stack (started in it) does, not an installed copy's.
sys.path.insert(0, str(common.REPO))

TARGET_RATIO = 0.98
# The stack's efficiency: raw (a)'s CPU per document over the whole stack's, with the stack's own backend.
TARGET_CPU_RATIO = 0.98
# The stack on OpenVINO against raw torch, docs/s.
TARGET_SPEEDUP = 1.8
TARGET_CLI_RATIO = 0.97
# What --backends measures the embedder's runners against: sentence-transformers' own encode.
REFERENCE = "sentence-transformers"
TARGET_LATENCY_P50_S = 2.0
# Models converted for OpenVINO, kept between runs (the stack's data dir is new each run).
MODEL_CACHE = common.REPO / ".semaflow" / "models"


def corpus_docs(corpus: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """``n`` documents: the corpus repeated (new ids for each pass) until there are ``n``."""
    out: list[tuple[str, str]] = []
    rep = 0
    while len(out) < n:
        for doc_id, text in corpus:
            if len(out) == n:
                break
            out.append((f"r{rep}-{doc_id}", text))
        rep += 1
    return out


def load_texts(data: Path, kind: str) -> list[tuple[str, str]]:
    """``(id, text)`` of SciFact's abstracts (title + abstract) or of its claims (short sentences)."""
    if kind == "claims":
        return [(f"claim{n}", text) for n, text in enumerate(common.load_queries(data))]
    return common.load_corpus(data)


def measure_raw(
    texts: list[str],
    probe_texts: list[str],
    batch_size: int,
    backend: str = "torch",
    per_call: int = 1_000,
    at_once: int = 1,
) -> dict[str, Any]:
    """(a): the model alone, in this process, ``per_call`` texts per call (as the stack's jobs get them); also
    embeds the latency probes (untimed).

    ``backend`` torch: ``SentenceTransformer.encode``, one call after another; openvino or auto:
    ``Encoder.encode`` as the embedder loads it with that setting (``--raw-backend``), ``at_once`` calls
    running at once from as many threads, as the embedder runs its jobs (``SEMAFLOW_EMBEDDER_THREADS``):
    the model's best on this machine, the stack's bound. Calls of the stack's batch size, not one call for every
    text: a call orders its texts by length, and past the corpus's size (SciFact has 1,109 claims) one call
    would put each text's copies side by side, batches of texts of one length that no stack batch holds."""
    import numpy as np
    import torch

    from shared.index.embedding import Encoder

    t = time.perf_counter()
    encoder = Encoder.load(batch_size=batch_size, backend=backend, cache_dir=MODEL_CACHE)  # type: ignore[arg-type]
    load_s = time.perf_counter() - t
    model = encoder.model

    run: Any = encoder.encode
    if encoder.backend == "torch":
        run = functools.partial(model.encode, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
        at_once = 1
    run(texts[:64])  # warm-up
    log(
        f"(a) encoding {len(texts):,} documents in-process with {encoder.backend} ({per_call} per call, {at_once} at"
        f" once, batch size {batch_size}, {torch.get_num_threads()} threads)"
    )
    calls = [texts[at : at + per_call] for at in range(0, len(texts), per_call)]
    t, cpu, busy = time.perf_counter(), common.self_cpu_seconds(), common.machine_busy_seconds()
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        vecs = np.concatenate(list(pool.map(run, calls)))
    elapsed = time.perf_counter() - t
    cpu = common.self_cpu_seconds() - cpu
    busy = common.machine_busy_seconds() - busy
    assert vecs.shape == (len(texts), encoder.dim)
    probes = encoder.encode(probe_texts)
    used = encoder.backend
    del run, model, encoder
    return {
        "documents": len(texts),
        "seconds": elapsed,
        "docs_per_s": len(texts) / elapsed,
        "cpu_s": cpu,
        "cores_used": cpu / elapsed,
        "other_load_cores": max(0.0, busy - cpu) / elapsed,
        "model_load_s": load_s,
        "batch_size": batch_size,
        "texts_per_call": per_call,
        "calls_at_once": at_once,
        "torch_threads": torch.get_num_threads(),
        "backend": used,
        "probe_vectors": probes,
    }


async def ingest_pipeline(
    stack: common.Stack, http: Any, name: str, docs: list[tuple[str, str]], batch: int
) -> dict[str, Any]:
    """(b): POST every batch, then wait until all are searchable."""
    base = f"{stack.url}/v1/collections/{name}"
    h = {**stack.headers, "Content-Type": "application/json"}
    async with http.put(base, headers=h) as resp:
        await check(resp, 200, 201)
    bodies = [
        json.dumps({"documents": [{"id": i, "text": t, "metadata": {"n": k}} for k, (i, t) in enumerate(chunk)]})
        for chunk in (docs[s : s + batch] for s in range(0, len(docs), batch))
    ]
    cpu0 = stack.cpu_by_service()
    busy0, self0 = common.machine_busy_seconds(), common.self_cpu_seconds()
    t0 = time.perf_counter()
    job_ids: list[str] = []
    post_s: list[float] = []
    for body in bodies:
        ts = time.perf_counter()
        async with http.post(base + "/documents", data=body, headers=h) as resp:
            job_ids.append((await check(resp, 202))["job_id"])
        post_s.append(time.perf_counter() - ts)
    t_posted = time.perf_counter() - t0
    log(f"(b) {len(bodies)} batches accepted in {t_posted:.2f}s; waiting until searchable")
    info, first_searchable = await common.wait_searchable(stack, http, name, job_ids, len(docs), t0=t0)
    elapsed = time.perf_counter() - t0
    cpu1 = stack.cpu_by_service()
    busy = common.machine_busy_seconds() - busy0
    self_cpu = common.self_cpu_seconds() - self0
    cpu = {k: round(cpu1.get(k, 0.0) - v, 2) for k, v in cpu0.items()}
    stack_cpu = sum(cpu.values())
    return {
        "documents": len(docs),
        "batches": len(bodies),
        "seconds": elapsed,
        "docs_per_s": len(docs) / elapsed,
        "post_total_s": t_posted,
        "post_p50_s": percentile(post_s, 50),
        "post_max_s": max(post_s),
        "first_searchable_s": first_searchable,
        "segments": info["segments"],
        "cpu_s_by_service": cpu,
        "stack_cpu_s": stack_cpu,
        "client_cpu_s": self_cpu,
        "stack_cores_used": stack_cpu / elapsed,
        "other_load_cores": max(0.0, busy - stack_cpu - self_cpu) / elapsed,
    }


async def latency(
    stack: common.Stack, http: Any, name: str, probes: list[tuple[list[str], list[str], list[float]]]
) -> dict[str, Any]:
    """(c): one 10-document batch at a time, on the idle stack, until a vector search finds it."""
    base = f"{stack.url}/v1/collections/{name}"
    h = {**stack.headers, "Content-Type": "application/json"}
    samples: list[float] = []
    server_job_s: list[float] = []
    for n, (ids, texts, vector) in enumerate(probes):
        await stack.wait_idle(http, cpu_frac=0.15, window_s=0.5, max_wait_s=60)
        body = json.dumps({"documents": [{"id": i, "text": t} for i, t in zip(ids, texts, strict=False)]})
        query = json.dumps({"vector": vector, "k": 10})
        t0 = time.perf_counter()
        async with http.post(base + "/documents", data=body, headers=h) as resp:
            job_id = (await check(resp, 202))["job_id"]
        while True:
            async with http.post(base + "/search", data=query, headers=h) as resp:
                res = await check(resp, 200)
            if any(r["id"] == ids[0] for r in res["results"]):
                break
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"probe {n} not searchable after 120 s")
            await asyncio.sleep(0.025)
        samples.append(time.perf_counter() - t0)
        async with http.get(f"{stack.url}/v1/jobs/{job_id}", headers=h) as resp:
            job = await check(resp, 200)
        if job["state"] == "succeeded":
            from datetime import datetime

            created = datetime.fromisoformat(job["created_at"])
            updated = datetime.fromisoformat(job["updated_at"])
            server_job_s.append((updated - created).total_seconds())
        log(f"(c) probe {n + 1}/{len(probes)}: searchable after {samples[-1]:.3f}s")
    return {
        "repeats": len(samples),
        "samples_s": samples,
        "p50_s": percentile(samples, 50),
        "p90_s": percentile(samples, 90),
        "min_s": min(samples),
        "max_s": max(samples),
        "server_job_p50_s": percentile(server_job_s, 50),
    }


def compare_backends(texts: list[str], batch_size: int, block: int) -> dict[str, Any]:
    """sentence-transformers' own ``encode`` (the reference) against the embedder's torch and OpenVINO runs, on the
    same documents, in-process, alternating blocks of ``block`` documents (one call each).

    Each block is encoded by each in turn (``Encoder.encode`` for torch and OpenVINO: a call tokenised once,
    batched by token count); wall and process CPU time are summed per runner, and every document's vector is
    compared with the reference's.
    """
    import numpy as np
    import torch

    from shared.index.backend_choice import min_cosine
    from shared.index.embedding import Encoder

    torch_encoder = Encoder.load(batch_size=batch_size, backend="torch")
    ov_encoder = Encoder.load(batch_size=batch_size, backend="openvino", cache_dir=MODEL_CACHE)
    st = functools.partial(
        torch_encoder.model.encode, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
    )
    runners: dict[str, Any] = {REFERENCE: st, "torch": torch_encoder.encode, "openvino": ov_encoder.encode}
    for run in runners.values():
        run(texts[:batch_size])  # warm-up
    wall = dict.fromkeys(runners, 0.0)
    cpu = dict.fromkeys(runners, 0.0)
    vectors: dict[str, list[Any]] = {name: [] for name in runners}
    log(f"encoding {len(texts):,} documents with each runner, {block} at a time, alternating")
    for start in range(0, len(texts), block):
        part = texts[start : start + block]
        for name, run in runners.items():
            t, c = time.perf_counter(), time.process_time()
            vectors[name].append(np.asarray(run(part), dtype=np.float32))
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
        log(
            f"  {start + len(part):,}/{len(texts):,}: "
            + "; ".join(f"{k} {wall[k]:.1f}s wall {cpu[k]:.1f}s CPU" for k in runners)
        )
    ref = np.concatenate(vectors[REFERENCE])
    n = len(texts)
    out: dict[str, Any] = {}
    for name in runners:
        got = np.concatenate(vectors[name])
        out[name] = {
            "seconds": wall[name],
            "docs_per_s": n / wall[name],
            "cpu_s": cpu[name],
            "cpu_ms_per_doc": cpu[name] / n * 1000,
            "speedup_wall": wall[REFERENCE] / wall[name],
            "speedup_cpu": cpu[REFERENCE] / cpu[name],
            "cosine_min": min_cosine(got, ref),
            "max_abs_diff": float(np.max(np.abs(got - ref))),
        }
    return {"documents": n, "block": block, "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
            "reference": REFERENCE, "backends": out}  # fmt: skip


def print_backends(out: dict[str, Any]) -> None:
    rows = [
        [name, out["documents"], r["seconds"], r["docs_per_s"], r["cpu_s"], r["cpu_ms_per_doc"], r["speedup_wall"],
         r["speedup_cpu"], f"{r['cosine_min']:.7f}", f"{r['max_abs_diff']:.1e}"]
        for name, r in out["backends"].items()
    ]  # fmt: skip
    print()
    print(f"embedding runners: {out['documents']:,} SciFact documents, batch size {out['batch_size']}, "
          f"blocks of {out['block']} alternating; reference: {out['reference']} (its own encode)")  # fmt: skip
    headers = ["runner", "docs", "wall s", "docs/s", "CPU s", "CPU ms/doc", "x docs/s", "x less CPU", "min cosine",
               "max |diff|"]  # fmt: skip
    print(table(headers, rows))


def stack_backend(stack: common.Stack) -> str:
    """The backend the stack's embedder runs, from its start-up log line (``model.loaded``)."""
    import re

    text = stack.log_path.read_text(errors="replace") if stack.log_path and stack.log_path.exists() else ""
    found = {m.group(1) for line in text.splitlines() if "model.loaded" in line
             for m in [re.search(r"\bbackend\W+(torch|openvino)\b", line)] if m}  # fmt: skip
    return "openvino" if "openvino" in found else ("torch" if found else "unknown")


def at_once(raw: dict[str, Any]) -> str:
    """How many calls (a) ran at once, for its row's label (nothing for one)."""
    n = raw.get("calls_at_once", 1)
    return f", {n} at once" if n > 1 else ""


def ratio_line(pipe_rate: float, raw_rate: float, raw_backend: str) -> tuple[str, bool]:
    """b/a with its verdict, or a refusal where the reference (a) is slower than what it bounds (b)."""
    if raw_rate < pipe_rate:
        return (
            f"b/a refused: the reference (raw {raw_backend}, {raw_rate:.2f} docs/s) is slower than the pipeline "
            f"({pipe_rate:.2f} docs/s), so it bounds nothing; measure (a) with the stack's backend (--raw-backends)",
            False,
        )
    ratio = pipe_rate / raw_rate
    ok = ratio >= TARGET_RATIO
    return f"b/a = {ratio:.3f}  (target >= {TARGET_RATIO}; reference: raw {raw_backend})  {verdict(ok)}", ok


def raw_references(raws: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per backend that ran (a): the mean docs/s and CPU ms per document of its runs."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["backend"] for r in raws):
        runs = [r for r in raws if r["backend"] == name]
        out[name] = {
            "docs_per_s": sum(r["docs_per_s"] for r in runs) / len(runs),
            "cpu_ms_per_doc": sum(r["cpu_s"] / r["documents"] for r in runs) / len(runs) * 1000,
            "runs": len(runs),
        }
    return out


def speedup_line(pipe_rate: float, torch_rate: float, bound: tuple[str, float] | None) -> tuple[str, bool]:
    """The stack's docs/s over raw torch's, or a refusal where the stack's own bound came out slower than it.

    Raw torch is the baseline the stack is meant to beat, so it being slower is the point; what must hold is
    that the reference the stack cannot beat, its own backend alone in this process (``bound``), is at least
    as fast as the stack. Otherwise the machine's load moved between the runs and no ratio from them means
    anything. Without that bound (its backend was not measured) the ratio is refused too.
    """
    if bound is None:
        return "stack/raw torch refused: the stack's own backend was not measured alone (--raw-backends)", False
    name, bound_rate = bound
    if bound_rate < pipe_rate:
        return (
            f"stack/raw torch refused: the stack's bound (raw {name}, {bound_rate:.2f} docs/s) is slower than the "
            f"stack ({pipe_rate:.2f} docs/s), so the machine's load moved between the runs; rerun",
            False,
        )
    speedup = pipe_rate / torch_rate
    ok = speedup >= TARGET_SPEEDUP
    return f"stack/raw torch = {speedup:.3f}x docs/s  (target >= {TARGET_SPEEDUP}x)  {verdict(ok)}", ok


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The stack's runs as one: documents, seconds and CPU summed, so rates and CPU per document are over all."""
    if len(runs) == 1:
        return dict(runs[0]["pipeline"])
    pipes = [r["pipeline"] for r in runs]
    docs, seconds = sum(p["documents"] for p in pipes), sum(p["seconds"] for p in pipes)
    cpu = {k: round(sum(p["cpu_s_by_service"].get(k, 0.0) for p in pipes), 2) for k in pipes[0]["cpu_s_by_service"]}
    stack_cpu = sum(p["stack_cpu_s"] for p in pipes)
    return {
        "documents": docs,
        "batches": sum(p["batches"] for p in pipes),
        "seconds": seconds,
        "docs_per_s": docs / seconds,
        "cpu_s_by_service": cpu,
        "stack_cpu_s": stack_cpu,
        "client_cpu_s": sum(p["client_cpu_s"] for p in pipes),
        "stack_cores_used": stack_cpu / seconds,
        "other_load_cores": sum(p["other_load_cores"] * p["seconds"] for p in pipes) / seconds,
    }


def round_ratios(runs: list[dict[str, Any]], raws: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    """Per stack run, b/a and raw/stack CPU per document against the stack's own backend's runs just before and
    after it (the machine's speed drifts over minutes; these pairs share it)."""
    out = []
    for n, run in enumerate(runs, 1):
        near = [r for r in raws if r["backend"] == backend and r.get("round", 0) in (n - 1, n)]
        if not near:
            continue
        rate = sum(r["docs_per_s"] for r in near) / len(near)
        raw_ms = sum(r["cpu_s"] / r["documents"] for r in near) / len(near) * 1000
        pipe = run["pipeline"]
        stack_ms = pipe["stack_cpu_s"] / pipe["documents"] * 1000
        out.append({"round": n, "ratio": pipe["docs_per_s"] / rate, "cpu_ratio": raw_ms / stack_ms})
    return out


def cpu_ratio_line(raw_ms: float, stack_ms: float, raw_backend: str) -> tuple[str, bool]:
    """(a)'s CPU per document over the whole stack's, with its verdict, or a refusal where (a) spent more."""
    if raw_ms > stack_ms:
        return (
            f"CPU per document refused: the reference (raw {raw_backend}, {raw_ms:.2f} ms) spent more than the whole "
            f"stack ({stack_ms:.2f} ms), so it bounds nothing",
            False,
        )
    ratio = raw_ms / stack_ms
    ok = ratio >= TARGET_CPU_RATIO
    return (
        f"raw/stack CPU per document = {ratio:.3f}  (target >= {TARGET_CPU_RATIO}; whole stack against raw "
        f"{raw_backend})  {verdict(ok)}",
        ok,
    )


def target_lines(
    pipe_rate: float,
    stack_backend_name: str,
    references: dict[str, dict[str, float]],
    results: dict[str, Any],
    stack_ms: float,
) -> tuple[list[str], bool]:
    """b/a and CPU per document against the stack's own backend alone and, when the stack runs another one, the
    speedup over torch."""
    lines: list[str] = []
    ok = True
    own = references.get(stack_backend_name)
    if own is not None:
        line, ok_own = ratio_line(pipe_rate, own["docs_per_s"], stack_backend_name)
        lines.append(line + (f"  [(a) = mean of {own['runs']} runs]" if own["runs"] > 1 else ""))
        results["ratio_pipeline_over_raw"] = pipe_rate / own["docs_per_s"] if own["docs_per_s"] >= pipe_rate else None
        line, ok_cpu = cpu_ratio_line(own["cpu_ms_per_doc"], stack_ms, stack_backend_name)
        lines.append(line)
        ok = ok and ok_own and ok_cpu
    else:
        lines.append(f"b/a: the stack's backend ({stack_backend_name}) was not measured alone (--raw-backends)")
        ok = False
    torch_ref = references.get("torch")
    if torch_ref is not None and stack_backend_name != "torch":
        bound = (stack_backend_name, own["docs_per_s"]) if own is not None else None
        line, ok_speed = speedup_line(pipe_rate, torch_ref["docs_per_s"], bound)
        lines.append(line)
        refused = line.startswith("stack/raw torch refused")
        results["speedup_pipeline_over_raw_torch"] = None if refused else pipe_rate / torch_ref["docs_per_s"]
        ok = ok and ok_speed
    return lines, ok


async def run_stack_phases(
    args: argparse.Namespace, docs: list[tuple[str, str]], probes: list[tuple[list[str], list[str], list[float]]]
) -> dict[str, Any]:
    env = {"SEMAFLOW_MODEL_CACHE_DIR": str(MODEL_CACHE)}
    if args.stack_backend:
        env["SEMAFLOW_EMBEDDER_BACKEND"] = args.stack_backend
    stack = common.Stack(keep_data=args.keep_data, env=env)
    t = time.perf_counter()
    stack.start()
    out: dict[str, Any] = {"stack_start_s": time.perf_counter() - t}
    try:
        async with common.session() as http:
            out["idle_wait_s"] = await stack.wait_idle(http)
            out["stack_backend"] = stack_backend(stack)
            log(f"the stack's embedder runs {out['stack_backend']}")
            log(f"stack idle (query model loaded) after {out['idle_wait_s']:.1f}s more; ingesting {len(docs):,} docs")
            out["pipeline"] = await ingest_pipeline(stack, http, "bench-ingest", docs, args.batch)
            log(f"(b) {out['pipeline']['docs_per_s']:.1f} docs/s; measuring single-batch latency")
            if args.repeats and probes:
                out["latency"] = await latency(stack, http, "bench-ingest", probes)
    finally:
        stack.stop()
        log("stack stopped")
    return out


async def ingest_cli(
    stack: common.Stack, http: Any, name: str, docs: list[tuple[str, str]], batch: int
) -> dict[str, Any]:
    """(d): ``semaflow ingest`` of a JSONL file holding the documents, then wait until all are searchable."""
    import resource
    import subprocess
    import tempfile

    base = f"{stack.url}/v1/collections/{name}"
    with tempfile.TemporaryDirectory(prefix="semaflow-bench-cli-") as tmp:
        path = Path(tmp) / "docs.jsonl"
        with path.open("w") as fh:
            for k, (i, t) in enumerate(docs):
                fh.write(json.dumps({"id": i, "text": t, "n": k}) + "\n")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")},
               "SEMAFLOW_URL": stack.url, "SEMAFLOW_API_KEY": stack.api_key}  # fmt: skip
        command = [sys.executable, "-m", "semaflow", "ingest", str(path), "--collection", name, "--batch-size",
                   str(batch), "--wait", "--no-progress", "--json"]  # fmt: skip
        cpu0 = stack.cpu_by_service()
        busy0 = common.machine_busy_seconds()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)
        t_cli = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"semaflow ingest exited {done.returncode}: {done.stderr[-2000:]}")
        summary = json.loads(done.stdout)
        info, first_searchable = await common.wait_searchable(stack, http, name, summary["jobs"], len(docs), t0=t0)
        elapsed = time.perf_counter() - t0
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = stack.cpu_by_service()
    busy = common.machine_busy_seconds() - busy0
    cpu = {k: round(cpu1.get(k, 0.0) - v, 2) for k, v in cpu0.items()}
    client_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    async with http.get(base, headers=stack.headers) as resp:
        await check(resp, 200)
    return {
        "documents": len(docs),
        "batches": summary["batches"],
        "seconds": elapsed,
        "cli_exit_s": t_cli,
        "docs_per_s": len(docs) / elapsed,
        "first_searchable_s": first_searchable,
        "segments": info["segments"],
        "cpu_s_by_service": cpu,
        "stack_cpu_s": sum(cpu.values()),
        "client_cpu_s": client_cpu,
        "other_load_cores": max(0.0, busy - sum(cpu.values()) - client_cpu) / elapsed,
    }


async def run_cli_compare(args: argparse.Namespace, docs: list[tuple[str, str]]) -> dict[str, Any]:
    """(b) and (d) on one stack, alternating, each round into fresh collections."""
    stack = common.Stack(keep_data=args.keep_data)
    stack.start()
    out: dict[str, Any] = {"direct": [], "cli": []}
    try:
        async with common.session() as http:
            await stack.wait_idle(http)
            for r in range(args.rounds):
                await stack.wait_idle(http, cpu_frac=0.15, window_s=0.5, max_wait_s=120)
                out["direct"].append(await ingest_pipeline(stack, http, f"bench-direct-{r}", docs, args.batch))
                log(f"(b) round {r + 1}: {out['direct'][-1]['docs_per_s']:.1f} docs/s")
                await stack.wait_idle(http, cpu_frac=0.15, window_s=0.5, max_wait_s=120)
                out["cli"].append(await ingest_cli(stack, http, f"bench-cli-{r}", docs, args.batch))
                log(f"(d) round {r + 1}: {out['cli'][-1]['docs_per_s']:.1f} docs/s")
    finally:
        stack.stop()
        log("stack stopped")
    return out


def main_cli(args: argparse.Namespace, docs: list[tuple[str, str]]) -> int:
    """``--mode cli``: print (b) and (d) side by side, and d/b per round (adjacent runs share the machine's load).

    The verdict is on the median of the per-round wall-clock ratios; beside it, the ratio of CPU seconds per
    document (stack and client together), which other load on the machine does not move.
    """
    out = asyncio.run(run_cli_compare(args, docs))
    rows = []
    labels = {"direct": "(b) HTTP POSTs from this process", "cli": "(d) semaflow ingest FILE --wait"}
    for n, pair in enumerate(zip(out["direct"], out["cli"], strict=True), 1):
        for key, r in zip(("direct", "cli"), pair, strict=True):
            per_doc = [r["stack_cpu_s"] / r["documents"] * 1000, r["client_cpu_s"] / r["documents"] * 1000]
            rows.append([f"{labels[key]}, round {n}", r["documents"], r["seconds"], r["docs_per_s"], *per_doc,
                         r["other_load_cores"]])  # fmt: skip
    print()
    print(f"semaflow ingest, file to searchable: {len(docs):,} SciFact documents, batches of {args.batch}")
    print()
    headers = ["measurement", "docs", "seconds", "docs/s", "stack CPU ms/doc", "client CPU ms/doc", "other load"]
    print(table(headers, rows))
    ratios = [c["docs_per_s"] / d["docs_per_s"] for d, c in zip(out["direct"], out["cli"], strict=True)]
    ratio = percentile(ratios, 50)

    def cpu_per_doc(runs: list[dict[str, Any]]) -> float:
        return float(sum(r["stack_cpu_s"] + r["client_cpu_s"] for r in runs) / sum(r["documents"] for r in runs))

    cpu_ratio = cpu_per_doc(out["direct"]) / cpu_per_doc(out["cli"])
    ok = ratio >= TARGET_CLI_RATIO
    print()
    print(f"  d/b per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"  CPU per document, (b)/(d): {cpu_ratio:.3f} (stack and client; insensitive to other load)")
    print()
    print("targets:")
    if ratio > 1:
        # The reference (b) is the pipeline's own rate: (d) runs on top of it and cannot beat it, so (b)
        # slower than (d) means the machine's load moved between the runs. No ratio from such a pair.
        print(f"  d/b: no ratio: the reference (b) was slower than (d) (median {ratio:.3f}); rerun on a quiet machine")
        ok = False
    else:
        print(f"  d/b = {ratio:.3f}  (median of {len(ratios)}; target >= {TARGET_CLI_RATIO})  {verdict(ok)}")
    results = {**out, "ratios_cli_over_direct": ratios, "ratio_cli_over_direct": ratio, "cpu_ratio": cpu_ratio}
    common.write_json(args.json, {**results, "environment": common.environment()})
    return 0 if ok else 1


def measure_rounds(
    args: argparse.Namespace,
    docs: list[tuple[str, str]],
    probe_docs: list[tuple[list[str], list[str]]],
    batch_size: int,
    threads: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(a) with each raw backend, then each stack run followed by (a) again (after the last only with
    ``--raw-after``): every (a) run and every stack run's phases, in order."""
    texts = [t for _, t in docs]
    raws: list[dict[str, Any]] = []
    probe_vectors: Any = None
    for name in args.raw_backends:
        probe_texts = [texts[0] for _, texts in probe_docs] if probe_vectors is None else []
        raw = measure_raw(texts, probe_texts, batch_size, name, args.batch, threads)
        vectors = raw.pop("probe_vectors")
        probe_vectors = vectors if probe_vectors is None else probe_vectors
        raw["when"] = "before the stack"
        raws.append(raw)
        log(f"(a) {raw['backend']}: {raw['docs_per_s']:.1f} docs/s in-process")
    probes = [(ids, texts, probe_vectors[n].tolist()) for n, (ids, texts) in enumerate(probe_docs)]
    runs: list[dict[str, Any]] = []
    for n in range(1, args.rounds + 1):
        last = n == args.rounds
        runs.append(asyncio.run(run_stack_phases(args, docs, probes if last else [])))
        if args.raw_after or not last:
            for name in reversed(args.raw_backends):  # reversed: each backend's two runs straddle the stack alike
                again = measure_raw(texts, [], batch_size, name, args.batch, threads)
                again.pop("probe_vectors")
                again["when"] = "after the stack" if args.rounds == 1 else f"after stack run {n}"
                again["round"] = n
                raws.append(again)
                log(f"(a) again, {again['backend']}: {again['docs_per_s']:.1f} docs/s in-process")

    return raws, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="SciFact folder (BEIR format)")
    parser.add_argument("--docs", type=int, default=10_000, help="documents to ingest (default 10,000)")
    parser.add_argument(
        "--texts",
        choices=("abstracts", "claims"),
        default="abstracts",
        help="SciFact abstracts (title + abstract, ~240 tokens, most truncated at 256; default) or its claims"
        " (one sentence, ~22 tokens)",
    )
    parser.add_argument("--batch", type=int, default=1_000, help="documents per POST in (b) (default 1,000)")
    parser.add_argument("--repeats", type=int, default=20, help="single-batch latency samples in (c) (default 20)")
    parser.add_argument("--probe-size", type=int, default=10, help="documents per batch in (c) (default 10)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument(
        "--raw-after", action="store_true", help="measure (a) again after the stack stopped; the ratio uses the mean"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data dir and log")
    mode_help = "full: (a), (b), (c); cli: (b) against (d), the same documents via `semaflow ingest`"
    parser.add_argument("--mode", choices=["full", "cli"], default="full", help=mode_help)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--mode cli: alternating rounds of (b) and (d); full mode: stack runs, each followed by (a) again (the"
        " ratios pool every run)",
    )
    parser.add_argument(
        "--raw-backends",
        type=lambda v: [b for b in v.split(",") if b],
        default=["torch", "openvino"],
        metavar="LIST",
        help="what (a) runs, comma-separated, each in turn: torch (SentenceTransformer.encode), openvino, auto"
        " (Encoder.encode as the embedder loads it with that setting); default torch,openvino",
    )
    parser.add_argument("--raw-backend", dest="raw_backends", type=lambda v: [v], help="one backend for (a)")
    parser.add_argument(
        "--stack-backend",
        choices=("torch", "openvino", "auto"),
        default=None,
        help="SEMAFLOW_EMBEDDER_BACKEND for the stack (default: the environment's, else auto)",
    )
    parser.add_argument(
        "--backends",
        action="store_true",
        help="only compare the embedder's runners in-process: sentence-transformers' own encode (the reference),"
        " the embedder's torch and OpenVINO, on the same --docs documents (no stack)",
    )
    parser.add_argument("--block", type=int, default=200, help="documents per alternating block with --backends")
    args = parser.parse_args(argv)

    from shared.config import Settings
    from shared.index.embedding import default_batch_size, pick_device

    settings = Settings()
    # What the embedder uses (SEMAFLOW_EMBED_BATCH_SIZE, else the device's default).
    batch_size = settings.embed_batch_size or default_batch_size(pick_device(settings.device))
    corpus = load_texts(args.data, args.texts)
    docs = corpus_docs(corpus, args.docs)
    if args.mode == "cli":
        return main_cli(args, docs)
    # Latency probes: corpus texts made unique with a prefix, so they are not ties of (b)'s documents.
    probe_docs = []
    for r in range(args.repeats):
        chunk = corpus[(r * args.probe_size) % len(corpus) :][: args.probe_size]
        ids = [f"probe{r}-{i}" for i, _ in chunk]
        texts = [f"Latency probe {r}-{k}. {t}" for k, (_i, t) in enumerate(chunk)]
        probe_docs.append((ids, texts))
    log(f"{len(docs):,} documents ({len(corpus):,} unique texts); embed batch size {batch_size}")

    texts = [t for _, t in docs]
    if args.backends:
        compared = compare_backends(texts, batch_size, args.block)
        print_backends(compared)
        common.write_json(args.json, {"backends": compared, "environment": common.environment()})
        return 0
    raws, runs = measure_rounds(args, docs, probe_docs, batch_size, settings.embedder_threads)
    stack_out = runs[-1]
    pipe = pooled(runs)
    stack_backend_name = stack_out.get("stack_backend", "unknown")
    references = raw_references(raws)
    stack_ms = pipe["stack_cpu_s"] / pipe["documents"] * 1000
    embedder_ms = pipe["cpu_s_by_service"].get("embedder", 0.0) / pipe["documents"] * 1000
    results: dict[str, Any] = {
        "texts": args.texts,
        "raw_model": raws,
        "raw_references": references,
        **stack_out,
        "pipeline": pipe,
        "stack_runs": [r["pipeline"] for r in runs],
        "rounds": round_ratios(runs, raws, stack_backend_name),
        "stack_cpu_ms_per_doc": stack_ms,
        "embedder_cpu_ms_per_doc": embedder_ms,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "cpu_ratio_min": TARGET_CPU_RATIO,
            "speedup_over_torch_min": TARGET_SPEEDUP,
            "latency_p50_max_s": TARGET_LATENCY_P50_S,
        },
        "environment": common.environment(),
    }
    print()
    runs_note = "" if args.rounds == 1 else f", {args.rounds} stack runs"
    print(
        f"semaflow ingest benchmark: {len(docs):,} SciFact {args.texts}, {stack_out['pipeline']['batches']} batches of"
        f" {args.batch}{runs_note}"
    )
    print()
    rows = [
        [f"(a) raw {r['backend']} encode, {r['texts_per_call']} per call{at_once(r)} ({r['when']})", r["documents"],
         r["seconds"], r["docs_per_s"], r["cpu_s"], r["cpu_s"] / r["documents"] * 1000, r["cores_used"],
         r["other_load_cores"]]
        for r in raws
    ]  # fmt: skip
    for n, run in enumerate(results["stack_runs"], 1):
        label = "" if args.rounds == 1 else f" run {n}"
        rows.append(
            [f"(b) stack{label} ({stack_backend_name}): first POST -> searchable", run["documents"], run["seconds"],
             run["docs_per_s"], run["stack_cpu_s"], run["stack_cpu_s"] / run["documents"] * 1000,
             run["stack_cores_used"], run["other_load_cores"]]
        )  # fmt: skip
    headers = ["measurement", "docs", "seconds", "docs/s", "CPU s", "CPU ms/doc", "cores used", "other load (cores)"]
    print(table(headers, rows))
    print()
    last = results["stack_runs"][-1]
    print(
        f"  (b) details: all POSTs answered after {last['post_total_s']:.2f}s (p50 {last['post_p50_s'] * 1000:.0f} ms, "
        f"max {last['post_max_s'] * 1000:.0f} ms); first documents searchable at {last['first_searchable_s']:.1f}s; "
        f"{last['segments']} segments" + ("" if args.rounds == 1 else " (last run)")
    )
    print(f"  (b) CPU seconds per process: {pipe['cpu_s_by_service']}; benchmark client {pipe['client_cpu_s']:.1f}")
    for r in results["rounds"] if args.rounds > 1 else []:
        print(
            f"  (b) run {r['round']} against its own backend's runs just before and after it: b/a {r['ratio']:.3f},"
            f" raw/stack CPU per document {r['cpu_ratio']:.3f}"
        )
    print(f"  (b) CPU per document: whole stack {stack_ms:.2f} ms, of which the embedder {embedder_ms:.2f} ms")
    print()
    print("  the stack against each raw backend (same run; CPU per document is insensitive to other load):")
    for name, ref in references.items():
        print(
            f"    raw {name}: {ref['docs_per_s']:.2f} docs/s, {ref['cpu_ms_per_doc']:.2f} CPU ms/doc"
            f" (mean of {ref['runs']}); raw/stack CPU per document: {ref['cpu_ms_per_doc'] / stack_ms:.3f} (whole"
            f" stack), {ref['cpu_ms_per_doc'] / max(embedder_ms, 1e-9):.3f} (embedder alone)"
        )
    lines, ok = target_lines(pipe["docs_per_s"], stack_backend_name, references, results, stack_ms)
    if "latency" in stack_out:
        lat = stack_out["latency"]
        print()
        print(
            table(
                ["(c) 10-doc batch POST -> found by search", "repeats", "p50 s", "p90 s", "min s", "max s"],
                [["latency", lat["repeats"], lat["p50_s"], lat["p90_s"], lat["min_s"], lat["max_s"]]],
            )
        )
        print(f"  (c) server-side job time (created -> succeeded), p50: {lat['server_job_p50_s']:.3f}s")
        ok_lat = lat["p50_s"] <= TARGET_LATENCY_P50_S
        lines.append(f"latency p50 = {lat['p50_s']:.3f}s  (target <= {TARGET_LATENCY_P50_S} s)  {verdict(ok_lat)}")
        ok = ok and ok_lat
    print()
    print("targets:")
    for line in lines:
        print("  " + line)
    common.write_json(args.json, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
