"""Webhook delivery benchmark: one notifier process delivering to a fast local receiver, alone and
while another endpoint times out on every request.

Run by hand (not pytest)::

    .venv/bin/python bench/webhooks.py                     # 3 rounds of 5,000 events per run
    .venv/bin/python bench/webhooks.py --events 2000 --rounds 1   # quick check
    .venv/bin/python bench/webhooks.py --json bench/results/webhooks.json

Each run starts its own redis-server, a receiver process (aiohttp: ``/fast`` answers 204 at once,
``/slow`` never answers) and one notifier process (``python -m services.notifier``, default settings:
15 s timeout, 50 attempts in flight per endpoint, 1,000 per process). Events are published on the
stream in one go, the way the other services publish them.

(ref) A bare aiohttp client in this process POSTs the same signed bodies to ``/fast`` with 20 requests
      in flight: the rate the receiver and the loopback allow, measured in the same run.
(a)   One endpoint on ``/fast`` subscribed to ``job.*``; ``--events`` job events are published. Rate =
      events / (last arrival - publish start). Target: >= 500 deliveries/s.
(b)   The same, after a second endpoint on ``/slow`` (subscribed to the same events) was added: every
      event now also goes to an endpoint that times out. Target: (b) / (a) >= 0.9.

(a) and (b) alternate for ``--rounds`` rounds (each (b) with a fresh timing-out endpoint, deleted
after it) and the medians are compared, so drift in a shared machine's speed falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import common
import redis
import redis.asyncio as aioredis
from aiohttp import web
from common import log, table, verdict

from semaflow.redis_server import RedisServer, free_port
from services.notifier.signing import headers as signed
from shared import keys
from shared.messaging import bus
from shared.messaging.events import CloudEvent, JobSucceeded
from shared.webhooks import endpoints

TARGET_RATE = 500.0
TARGET_RATIO = 0.9
TENANT = "bench"


# --- the receiver (a separate process, so it does not share this one's GIL) ------------------


def serve_receiver(port: int) -> None:
    """``/fast`` counts and answers 204; ``/slow`` never answers; ``/stats`` and ``/reset`` for the driver."""
    stats: dict[str, Any] = {"count": 0, "first": None, "last": None, "slow": 0}

    async def fast(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        stats["count"] += 1
        stats["first"] = stats["first"] or now
        stats["last"] = now
        return web.Response(status=204)

    async def slow(request: web.Request) -> web.Response:
        stats["slow"] += 1
        await asyncio.sleep(3600)
        return web.Response(status=204)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(request: web.Request) -> web.Response:
        stats.update(count=0, first=None, last=None, slow=0)
        return web.json_response(stats)

    app = web.Application()
    app.router.add_post("/fast", fast)
    app.router.add_post("/slow", slow)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


# --- the driver -----------------------------------------------------------------------------


async def _stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/stats") as resp:
        out: dict[str, Any] = await resp.json()
        return out


async def _wait_http(http: aiohttp.ClientSession, base: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await _stats(http, base)
            return
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _publish(client: redis.Redis, n: int, maxlen: int) -> float:
    """Publish ``n`` job events in pipelined chunks; returns when publishing started (epoch seconds)."""
    started = time.time()
    for start in range(0, n, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 1000)):
                data = JobSucceeded(tenant=TENANT, collection="c", job_id=f"job_{i}", version="0000000001-ab")
                event = CloudEvent.wrap(data, source="semaflow/bench", subject=f"job_{i}")
                bus.publish(pipe, event, maxlen=maxlen)
            pipe.execute()
    return started


async def _delivered(http: aiohttp.ClientSession, base: str, n: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await _stats(http, base)
        if stats["count"] >= n:
            return stats
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stats['count']} of {n} deliveries arrived within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _reference(http: aiohttp.ClientSession, base: str, n: int, concurrency: int) -> float:
    """Deliveries/s of a bare aiohttp client with ``concurrency`` requests in flight."""
    secret = endpoints.new_secret()
    body = CloudEvent.wrap(JobSucceeded(tenant=TENANT, collection="c", job_id="job_ref"), source="bench").encode()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            sign = signed([secret], f"ref_{i}", int(time.time()), body)
            async with http.post(f"{base}/fast", data=body, headers=sign) as resp:
                await resp.read()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def _unrecorded(client: redis.Redis, endpoint_id: str, timeout_s: float = 10.0) -> int:
    """Attempts on ``endpoint_id`` still held under a lease (made, not yet recorded) after up to ``timeout_s``.

    A run only counts once every attempt it made is recorded.
    """
    held = keys.webhook_in_flight(endpoint_id)
    deadline = time.monotonic() + timeout_s
    while (left := int(client.zcard(held))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


async def _run(
    redis_url: str, base: str, fast_id: str, events: int, label: str, http: aiohttp.ClientSession
) -> dict[str, Any]:
    async with http.post(f"{base}/reset") as resp:
        await resp.read()
    client = redis.Redis.from_url(redis_url)
    started = _publish(client, events, maxlen=max(100_000, events * 3))
    stats = await _delivered(http, base, events, timeout_s=max(120.0, events / 50))
    elapsed = stats["last"] - started
    rate = events / elapsed
    left = await asyncio.to_thread(_unrecorded, client, fast_id)
    client.close()
    log(f"{label}: {events} deliveries in {elapsed:.2f} s = {rate:.0f}/s; attempts left unrecorded: {left}")
    if left:
        raise SystemExit(f"{left} attempts were never recorded")
    return {"events": events, "seconds": elapsed, "rate": rate, "slow_requests": stats["slow"]}


def _cpu(pid: int) -> float:
    return common.cpu_seconds(common.process_tree(pid))


async def measure(
    args: argparse.Namespace, redis_url: str, base: str, notifier_pid: int, redis_pid: int
) -> dict[str, Any]:
    """The reference, then ``--rounds`` rounds of (a) and (b), interleaved, against processes already started.

    Interleaving puts the machine's drift (other load, frequency changes) into both sides alike; each
    round's (b) adds a fresh endpoint that times out and deletes it afterwards.
    """
    aclient = aioredis.Redis.from_url(redis_url)
    alone: list[dict[str, Any]] = []
    beside: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
            await _wait_http(http, base)
            log(f"reference: bare aiohttp client, {args.concurrency} in flight, {args.events} requests")
            reference = await _reference(http, base, args.events, args.concurrency)
            log(f"reference: {reference:.0f} requests/s")

            fast, _ = await endpoints.create(aclient, TENANT, f"{base}/fast", ("job.*",))
            await _run(redis_url, base, fast.id, min(500, args.events), "warm-up", http)
            for n in range(1, args.rounds + 1):
                cpu0 = (_cpu(notifier_pid), _cpu(redis_pid))
                run = await _run(redis_url, base, fast.id, args.events, f"round {n} (a) fast endpoint alone", http)
                alone.append(run | _cpu_per_delivery(cpu0, notifier_pid, redis_pid, args.events))

                slow, _ = await endpoints.create(aclient, TENANT, f"{base}/slow", ("job.*",))
                cpu0 = (_cpu(notifier_pid), _cpu(redis_pid))
                label = f"round {n} (b) beside an endpoint that times out"
                run = await _run(redis_url, base, fast.id, args.events, label, http)
                beside.append(run | _cpu_per_delivery(cpu0, notifier_pid, redis_pid, args.events))
                await endpoints.delete(aclient, slow)
    finally:
        await aclient.aclose()
    return {"reference_rate": reference, "alone": alone, "beside_slow": beside}


def _cpu_per_delivery(before: tuple[float, float], notifier_pid: int, redis_pid: int, events: int) -> dict[str, float]:
    return {
        "notifier_cpu_ms_per_delivery": (_cpu(notifier_pid) - before[0]) * 1000 / events,
        "redis_cpu_ms_per_delivery": (_cpu(redis_pid) - before[1]) * 1000 / events,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["rate"] for r in runs]
    return {
        "rate": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "cpu": statistics.median(r["notifier_cpu_ms_per_delivery"] for r in runs),
        "redis_cpu": statistics.median(r["redis_cpu_ms_per_delivery"] for r in runs),
    }


def _wait_notifier(redis_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while not list(client.scan_iter(match=keys.heartbeat_pattern("notifier"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the notifier did not start")
            time.sleep(0.1)
    finally:
        client.close()


def report(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    """Print the table; returns the results with the medians and their ratio."""
    reference = measured["reference_rate"]
    a, b = _summary(measured["alone"]), _summary(measured["beside_slow"])
    ratio = b["rate"] / a["rate"]
    rounds = [y["rate"] / x["rate"] for x, y in zip(measured["alone"], measured["beside_slow"], strict=True)]
    print()
    print(
        table(
            ["run", "rounds", "deliveries/s (median)", "min", "max", "vs ref", "CPU ms/dlv", "Redis ms/dlv", "target"],
            [
                ["(ref) bare aiohttp client", 1, reference, reference, reference, 1.0, "-", "-", ""],
                [
                    "(a) fast endpoint alone",
                    args.rounds,
                    a["rate"],
                    a["min"],
                    a["max"],
                    a["rate"] / reference,
                    a["cpu"],
                    a["redis_cpu"],
                    f">= {TARGET_RATE:.0f}/s {verdict(a['rate'] >= TARGET_RATE)}",
                ],
                [
                    "(b) beside a timing-out endpoint",
                    args.rounds,
                    b["rate"],
                    b["min"],
                    b["max"],
                    b["rate"] / reference,
                    b["cpu"],
                    b["redis_cpu"],
                    f"b/a = {ratio:.3f} >= {TARGET_RATIO} {verdict(ratio >= TARGET_RATIO)}",
                ],
            ],
        )
    )
    print(f"\nb/a per round: {', '.join(f'{r:.3f}' for r in rounds)} ({args.events:,} deliveries to /fast per run)")
    slow = [r["slow_requests"] for r in measured["beside_slow"]]
    print(f"the timing-out endpoint of each round received {slow} requests (its attempts in flight are capped)")
    summary = {"alone": a, "beside_slow": b, "ratio": ratio, "ratio_per_round": rounds}
    return {**measured, "summary": summary, "environment": common.environment()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start Redis, the receiver and one notifier; measure; stop them all."""
    work = Path(tempfile.mkdtemp(prefix="semaflow-bench-webhooks-"))
    server = RedisServer.start(work / "redis")
    port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--serve-receiver", str(port)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")},
        "SEMAFLOW_REDIS_URL": server.url,
        "SEMAFLOW_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "SEMAFLOW_LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
        **dict(item.split("=", 1) for item in args.notifier_env),
    }
    with (work / "notifier.log").open("wb") as notifier_log:
        notifier = subprocess.Popen([sys.executable, "-m", "services.notifier"], env=env, stderr=notifier_log)
        try:
            _wait_notifier(server.url, notifier)
            measured = asyncio.run(
                measure(args, server.url, f"http://127.0.0.1:{port}", notifier.pid, server.process.pid)
            )
        finally:
            notifier.terminate()
            notifier.wait(60)
            receiver.kill()  # it holds the timed-out requests open; nothing to wait for
            receiver.wait(10)
            server.stop()
    return report(args, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000, help="events (= deliveries to /fast) per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a) then (b); medians are compared")
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight of the reference client")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--notifier-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the notifier"
    )
    parser.add_argument("--serve-receiver", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver is not None:
        serve_receiver(args.serve_receiver)
        return
    common.write_json(args.json, run(args))


if __name__ == "__main__":
    main()
