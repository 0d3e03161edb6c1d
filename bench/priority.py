"""Scheduling benchmark: a critical batch behind a bulk backlog, and one tenant's batch behind another's.

Run by hand (not pytest)::

    .venv/bin/python bench/priority.py                   # backlogs of 2,000 batches
    .venv/bin/python bench/priority.py --backlog 200     # quick check
    .venv/bin/python bench/priority.py --json bench/results/priority.json

On one idle ``semaflow up`` stack, each batch ``--batch-docs`` SciFact documents:

(ref) One batch at a time on the idle stack, repeated: the server's start -> finish of the job
      (``updated_at - started_at``) and the client's POST -> ``succeeded``. The p50 of the
      server-side figure is the reference embed time.
(a)   Priority: ``--backlog`` bulk batches are queued, then one critical batch. Its start delay is
      ``started_at - created_at`` of the critical job. Target: <= reference + 1 s (at most the batch
      in progress finishes first). For contrast, FIFO order would have cost its queue position times
      the reference. The backlog is cancelled afterwards.
(b)   Fairness: tenant A queues ``--backlog`` normal batches, then tenant B (a second API key, its
      own collection) one normal batch. B's completion is the time from its POST until its job has
      succeeded (client side). Target: <= reference + 1 s. A's backlog is cancelled afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import common
from common import check, log, percentile, table, verdict
from startup import stack_env

SLACK_S = 1.0  # the targets allow the reference embed time plus this
POLL_S = 0.02  # job polling interval: well below the figures measured
WAIT_S = 600.0  # give up on one job (or a queue draining) after this long
TENANT_B = "tenant-b"


@dataclass(frozen=True)
class Client:
    """One tenant's view of the stack: base URL and its bearer key."""

    http: aiohttp.ClientSession
    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    async def put_collection(self, name: str) -> None:
        async with self.http.put(f"{self.url}/v1/collections/{name}", headers=self.headers) as resp:
            await check(resp, 200, 201)

    async def post_batch(self, collection: str, body: str) -> str:
        """Submit one ingest batch; its job id."""
        url = f"{self.url}/v1/collections/{collection}/documents"
        async with self.http.post(url, data=body, headers=self.headers) as resp:
            return str((await check(resp, 202))["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers) as resp:
            body: dict[str, Any] = await check(resp, 200)
            return body

    async def jobs(self, collection: str) -> list[dict[str, Any]]:
        """Every job of this tenant in ``collection`` (all pages)."""
        out: list[dict[str, Any]] = []
        params = {"collection": collection, "limit": "500"}
        while True:
            async with self.http.get(f"{self.url}/v1/jobs", params=params, headers=self.headers) as resp:
                page = await check(resp, 200)
            out.extend(page["jobs"])
            if not page.get("next_cursor"):
                return out
            params["cursor"] = page["next_cursor"]

    async def cancel(self, collection: str) -> int:
        """Cancel this tenant's queued or running jobs in ``collection``; how many."""
        body = {"collection": collection}
        async with self.http.post(f"{self.url}/v1/jobs:cancel", json=body, headers=self.headers) as resp:
            return int((await check(resp, 200))["matched"])

    async def queues(self) -> dict[str, Any]:
        """Statistics of each work queue (``embed``, ``index``)."""
        async with self.http.get(f"{self.url}/v1/queues", headers=self.headers) as resp:
            body: dict[str, Any] = (await check(resp, 200))["queues"]
            return body

    async def wait_job(self, job_id: str, done: str) -> tuple[dict[str, Any], float]:
        """Poll a job until ``done`` ("started" or "succeeded"); the job and seconds waited.

        Raises:
            RuntimeError: the job ended otherwise, or did not get there within ``WAIT_S``.
        """
        t0 = time.perf_counter()
        while True:
            job = await self.job(job_id)
            if (done == "started" and job.get("started_at")) or job["state"] == "succeeded":
                return job, time.perf_counter() - t0
            if job["state"] in ("failed", "cancelled", "dead"):
                raise RuntimeError(f"job {job_id} is {job['state']}: {job.get('error')}")
            if time.perf_counter() - t0 > WAIT_S:
                raise RuntimeError(f"job {job_id} not {done} after {WAIT_S:.0f}s (state {job['state']})")
            await asyncio.sleep(POLL_S)


class Load:
    """CPU the stack, this client and everything else on the machine used since it was made, in cores."""

    def __init__(self, stack: common.Stack) -> None:
        self.stack = stack
        self.t0 = time.perf_counter()
        self.stack0 = sum(stack.cpu_by_service().values())
        self.busy0 = common.machine_busy_seconds()
        self.self0 = common.self_cpu_seconds()

    def cores(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        stack = sum(self.stack.cpu_by_service().values()) - self.stack0
        client = common.self_cpu_seconds() - self.self0
        other = max(0.0, common.machine_busy_seconds() - self.busy0 - stack - client)
        return {"seconds": elapsed, "stack": stack / elapsed, "client": client / elapsed, "other": other / elapsed}


# --- inputs -----------------------------------------------------------------------------------


class Batches:
    """Ingest bodies of ``size`` SciFact documents each, with ids and texts unique per label."""

    def __init__(self, corpus: list[tuple[str, str]], size: int) -> None:
        self.corpus = corpus
        self.size = size
        self._next = 0

    def body(self, label: str, priority: str) -> str:
        docs = []
        for k in range(self.size):
            doc_id, text = self.corpus[(self._next + k) % len(self.corpus)]
            docs.append({"id": f"{label}-{doc_id}", "text": f"{label} {k}. {text}"})
        self._next += self.size
        return json.dumps({"documents": docs, "priority": priority})

    def bodies(self, label: str, priority: str, n: int) -> list[str]:
        return [self.body(f"{label}{i}", priority) for i in range(n)]


def _at(job: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(job[field])


def _seconds(job: dict[str, Any], start: str, end: str) -> float:
    return (_at(job, end) - _at(job, start)).total_seconds()


# --- phases -----------------------------------------------------------------------------------


async def submit_all(client: Client, collection: str, bodies: list[str], in_flight: int) -> tuple[list[str], float]:
    """POST every body, ``in_flight`` at a time; the job ids and the seconds it took."""
    gate = asyncio.Semaphore(in_flight)

    async def one(body: str) -> str:
        async with gate:
            return await client.post_batch(collection, body)

    t0 = time.perf_counter()
    ids = await asyncio.gather(*(one(b) for b in bodies))
    return list(ids), time.perf_counter() - t0


async def drain(stack: common.Stack, client: Client, collection: str) -> dict[str, Any]:
    """Cancel a backlog, then wait until no work is queued or in flight and the stack is idle again."""
    t0 = time.perf_counter()
    matched = await client.cancel(collection)
    cancel_s = time.perf_counter() - t0
    while True:
        stats = await client.queues()
        if all(sum(q["depth"].values()) == 0 and q["in_flight"] == 0 for q in stats.values()):
            break
        if time.perf_counter() - t0 > WAIT_S:
            raise RuntimeError(f"queues not empty {WAIT_S:.0f}s after the cancel: {stats}")
        await asyncio.sleep(0.2)
    drained_s = time.perf_counter() - t0
    await stack.wait_idle(client.http, cpu_frac=0.15, window_s=1.0, max_wait_s=WAIT_S)
    log(f"cancelled {matched} jobs in {cancel_s:.1f}s; queues empty after {drained_s:.1f}s")
    return {"cancelled": matched, "cancel_s": cancel_s, "drained_s": drained_s}


async def reference(stack: common.Stack, client: Client, batches: Batches, repeats: int) -> dict[str, Any]:
    """(ref): one batch at a time on the idle stack."""
    collection = "bench-priority-ref"
    await client.put_collection(collection)
    server_s: list[float] = []
    client_s: list[float] = []
    queued_s: list[float] = []
    load = Load(stack)
    for n in range(repeats):
        await stack.wait_idle(client.http, cpu_frac=0.15, window_s=0.5, max_wait_s=60)
        t0 = time.perf_counter()
        job_id = await client.post_batch(collection, batches.body(f"ref{n}", "normal"))
        job, _ = await client.wait_job(job_id, "succeeded")
        client_s.append(time.perf_counter() - t0)
        server_s.append(_seconds(job, "started_at", "updated_at"))
        queued_s.append(_seconds(job, "created_at", "started_at"))
        log(
            f"(ref) batch {n + 1}/{repeats}: started -> succeeded {server_s[-1]:.3f}s, POST -> done {client_s[-1]:.3f}s"
        )
    return {
        "repeats": repeats,
        "server_s": server_s,
        "client_s": client_s,
        "queued_s": queued_s,
        "server_p50_s": percentile(server_s, 50),
        "client_p50_s": percentile(client_s, 50),
        "queued_p50_s": percentile(queued_s, 50),
        "load_cores": load.cores(),
    }


@dataclass(frozen=True)
class BehindBacklog:
    """One batch submitted behind a queued backlog: its job and what the client saw."""

    job_id: str
    job: dict[str, Any]
    elapsed_s: float  # from its POST until the client saw the awaited state
    submit_s: float  # time to submit the backlog
    depth_before: dict[str, int]  # the embed queue when it was submitted
    load_cores: dict[str, float]


async def behind_backlog(
    stack: common.Stack,
    label: str,
    backlog: tuple[Client, str, list[str]],
    one: tuple[Client, str, str],
    until: str,
    args: argparse.Namespace,
) -> BehindBacklog:
    """Queue ``backlog`` (client, collection, bodies), then POST ``one`` (client, collection, body)
    and wait until its job reaches ``until``."""
    owner, backlog_coll, bodies = backlog
    client, coll, body = one
    await owner.put_collection(backlog_coll)
    await client.put_collection(coll)
    log(f"{label} queueing {len(bodies):,} batches")
    _, submit_s = await submit_all(owner, backlog_coll, bodies, args.in_flight)
    depth_before = (await owner.queues())["embed"]["depth"]
    log(f"{label} backlog accepted in {submit_s:.1f}s (embed queue {depth_before}); submitting the one batch")
    load = Load(stack)
    t0 = time.perf_counter()
    job_id = await client.post_batch(coll, body)
    job, _ = await client.wait_job(job_id, until)
    elapsed_s = time.perf_counter() - t0
    return BehindBacklog(job_id, job, elapsed_s, submit_s, depth_before, load.cores())


async def priority(stack: common.Stack, client: Client, batches: Batches, args: argparse.Namespace) -> dict[str, Any]:
    """(a): one critical batch behind a bulk backlog."""
    backlog, urgent = "bench-priority-bulk", "bench-priority-critical"
    bodies = batches.bodies("bulk", "bulk", args.backlog)
    run = await behind_backlog(
        stack, "(a)", (client, backlog, bodies), (client, urgent, batches.body("critical", "critical")), "started", args
    )
    job = run.job
    created, started = _at(job, "created_at"), _at(job, "started_at")
    bulk_jobs = await client.jobs(backlog)
    starts = [_at(j, "started_at") for j in bulk_jobs if j.get("started_at")]
    before_created = sum(1 for s in starts if s < created)
    before_started = sum(1 for s in starts if s < started)
    position = len(bulk_jobs) - before_created  # bulk batches still waiting when it arrived
    out: dict[str, Any] = {
        "backlog": args.backlog,
        "submit_s": run.submit_s,
        "embed_depth_before": run.depth_before,
        "start_delay_s": (started - created).total_seconds(),
        "client_seen_started_s": run.elapsed_s,
        "bulk_started_before_submit": before_created,
        "bulk_started_before_it": before_started,
        "bulk_jumped_ahead": before_started - before_created,
        "queue_position": position,
        "load_cores": run.load_cores,
    }
    log(f"(a) critical batch started after {out['start_delay_s']:.3f}s; {before_started} bulk batches started before")
    out["drain"] = await drain(stack, client, backlog)
    done = await client.job(run.job_id)
    if done["state"] == "succeeded":
        out["critical_total_s"] = _seconds(done, "created_at", "updated_at")
    return out


async def fairness(
    stack: common.Stack, a: Client, b: Client, batches: Batches, args: argparse.Namespace
) -> dict[str, Any]:
    """(b): tenant B's one batch behind tenant A's backlog at the same priority."""
    coll_a, coll_b = "bench-fair-a", "bench-fair-b"
    bodies = batches.bodies("tenantA", "normal", args.backlog)
    run = await behind_backlog(
        stack, "(b)", (a, coll_a, bodies), (b, coll_b, batches.body("tenantB", "normal")), "succeeded", args
    )
    job = run.job
    a_jobs = await a.jobs(coll_a)
    created, started = _at(job, "created_at"), _at(job, "started_at")
    a_started_between = sum(1 for j in a_jobs if j.get("started_at") and created <= _at(j, "started_at") < started)
    out: dict[str, Any] = {
        "backlog": args.backlog,
        "submit_s": run.submit_s,
        "embed_depth_before": run.depth_before,
        "completion_s": run.elapsed_s,
        "server_total_s": _seconds(job, "created_at", "updated_at"),
        "start_delay_s": _seconds(job, "created_at", "started_at"),
        "run_s": _seconds(job, "started_at", "updated_at"),
        "a_started_while_b_waited": a_started_between,
        "load_cores": run.load_cores,
    }
    log(f"(b) tenant B's batch succeeded {run.elapsed_s:.3f}s after its POST")
    out["drain"] = await drain(stack, a, coll_a)
    return out


def second_key(stack: common.Stack) -> str:
    """A fresh API key of tenant B, stored directly in the stack's Redis."""
    import redis

    from shared.records import apikeys

    client = redis.Redis.from_url(stack_env(stack)["SEMAFLOW_REDIS_URL"])
    try:
        key = apikeys.new_key()
        apikeys.store(client, key, TENANT_B)
        return key
    finally:
        client.close()


async def run(args: argparse.Namespace, batches: Batches) -> dict[str, Any]:
    stack = common.Stack(keep_data=args.keep_data).start()
    out: dict[str, Any] = {}
    try:
        async with common.session(connections=args.in_flight + 4) as http:
            out["idle_wait_s"] = await stack.wait_idle(http)
            a = Client(http, stack.url, stack.api_key)
            b = Client(http, stack.url, second_key(stack))
            log(f"stack idle; reference: {args.repeats} single batches of {args.batch_docs} documents")
            out["reference"] = await reference(stack, a, batches, args.repeats)
            out["priority"] = await priority(stack, a, batches, args)
            out["fairness"] = await fairness(stack, a, b, batches, args)
    finally:
        stack.stop()
        log("stack stopped")
    return out


def report(args: argparse.Namespace, out: dict[str, Any]) -> bool:
    """Print the table and the verdicts; True when both targets are met."""
    ref, pri, fair = out["reference"], out["priority"], out["fairness"]
    ref_s = ref["server_p50_s"]
    target = ref_s + SLACK_S
    fifo_s = pri["queue_position"] * ref_s
    print()
    print(
        f"semaflow scheduling: batches of {args.batch_docs} SciFact documents, backlogs of {args.backlog:,} batches"
        f" ({len(os.sched_getaffinity(0))} CPUs)"
    )
    print()
    nan = math.nan
    ref_load, pri_load, fair_load = ref["load_cores"], pri["load_cores"], fair["load_cores"]
    rows = [
        ["reference: one batch, started -> succeeded (server)", ref_s, max(ref["server_s"]), 1.0,
         ref_load["stack"], ref_load["other"]],
        ["reference: one batch, POST -> succeeded (client)", ref["client_p50_s"], max(ref["client_s"]),
         ref["client_p50_s"] / ref_s, ref_load["stack"], ref_load["other"]],
        [f"(a) critical behind {pri['backlog']:,} bulk: created -> started", pri["start_delay_s"], nan,
         pri["start_delay_s"] / ref_s, pri_load["stack"], pri_load["other"]],
        [f"(a) same in FIFO order: {pri['queue_position']:,} batches x reference", fifo_s, nan, fifo_s / ref_s,
         nan, nan],
        [f"(b) tenant B behind A's {fair['backlog']:,}: POST -> succeeded", fair["completion_s"], nan,
         fair["completion_s"] / ref_s, fair_load["stack"], fair_load["other"]],
        ["(b) same, server: created -> succeeded", fair["server_total_s"], nan, fair["server_total_s"] / ref_s,
         fair_load["stack"], fair_load["other"]],
    ]  # fmt: skip
    headers = ["measurement", "seconds", "max s", "x reference", "stack cores", "other load (cores)"]
    print(table(headers, rows))
    print()
    print(f"  (ref) {ref['repeats']} repeats; created -> started on the idle stack p50 {ref['queued_p50_s']:.3f}s")
    print(
        f"  (a) bulk batches started before the critical one: {pri['bulk_started_before_it']:,}"
        f" ({pri['bulk_started_before_submit']:,} before it was submitted, {pri['bulk_jumped_ahead']:,} after);"
        f" backlog submitted in {pri['submit_s']:.1f}s; cancelled {pri['drain']['cancelled']:,}"
    )
    print(
        f"  (b) tenant B: created -> started {fair['start_delay_s']:.3f}s, started -> succeeded {fair['run_s']:.3f}s;"
        f" A's batches started while B waited: {fair['a_started_while_b_waited']:,};"
        f" backlog submitted in {fair['submit_s']:.1f}s; cancelled {fair['drain']['cancelled']:,}"
    )
    ok_pri = bool(pri["start_delay_s"] <= target)
    ok_fair = bool(fair["completion_s"] <= target)
    print()
    print("targets:")
    print(
        f"  critical start delay = {pri['start_delay_s']:.3f}s  (target <= reference + {SLACK_S:.0f} s ="
        f" {target:.3f} s; x{pri['start_delay_s'] / target:.2f} of target)  {verdict(ok_pri)}"
    )
    print(
        f"  tenant B completion  = {fair['completion_s']:.3f}s  (target <= reference + {SLACK_S:.0f} s ="
        f" {target:.3f} s; x{fair['completion_s'] / target:.2f} of target)  {verdict(ok_fair)}"
    )
    out["targets"] = {"max_s": target, "slack_s": SLACK_S, "priority_ok": ok_pri, "fairness_ok": ok_fair}
    out["fifo_estimate_s"] = fifo_s
    return ok_pri and ok_fair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="SciFact folder (BEIR format)")
    parser.add_argument("--backlog", type=int, default=2_000, help="batches queued ahead (default 2,000)")
    parser.add_argument("--batch-docs", type=int, default=10, help="documents per batch (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="single batches for the reference (default 5)")
    parser.add_argument("--in-flight", type=int, default=16, help="concurrent POSTs while queueing (default 16)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data dir and log")
    args = parser.parse_args(argv)

    batches = Batches(common.load_corpus(args.data), args.batch_docs)
    out = asyncio.run(run(args, batches))
    ok = report(args, out)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    common.write_json(args.json, {**out, "args": settings, "environment": common.environment()})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
