"""The SDK against a real HTTP server that fails on purpose: retries honour Retry-After, a POST keeps one
Idempotency-Key across its attempts, and what cannot be retried raises at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from semaflow.client import AsyncClient, Client, NotFound, RateLimited, RetryPolicy, Timeout, Unavailable
from semaflow.redis_server import free_port

ServerFactory = Callable[..., Awaitable[TestServer]]

PROBLEM = "application/problem+json"
ACCEPTED = {"job_id": "job_1", "batch_id": "b_1"}
JOB = {
    "id": "job_1",
    "tenant": "dev",
    "collection": "c",
    "kind": "ingest",
    "state": "succeeded",
    "documents": 2,
    "embedded": 2,
    "indexed": 2,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:01Z",
}


def _problem(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": f"https://semaflow.dev/problems/{title.lower()}", "title": title, "status": status, "detail": "x"}
    return web.json_response(body, status=status, content_type=PROBLEM, headers=headers)


class Flaky:
    """An ingest route that answers each status of ``script`` in turn (then 202), noting every request."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.seen: list[tuple[float, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((time.monotonic(), dict(request.headers), await request.read()))
        if self.script:
            status, headers = self.script.pop(0)
            return _problem(status, "Busy", headers)
        return web.json_response(ACCEPTED, status=202)


async def _serve(aiohttp_server: ServerFactory, flaky: Flaky) -> str:
    app = web.Application()
    app.router.add_post("/v1/collections/{name}/documents", flaky.handle)
    app.router.add_get("/v1/jobs/{job_id}", _job)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def _job(_request: web.Request) -> web.Response:
    return web.json_response(JOB)


DOCS = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]


async def test_503_then_429_then_202_is_retried_waiting_what_retry_after_asks(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky([(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})])
    url = await _serve(aiohttp_server, flaky)
    async with AsyncClient(url, "k", retry=RetryPolicy(max_attempts=5, max_time_s=30, base_s=0.05)) as client:
        accepted = await client.ingest_batch("c", DOCS)
    assert accepted.job_id == "job_1"
    assert len(flaky.seen) == 3
    gaps = [b[0] - a[0] for a, b in zip(flaky.seen, flaky.seen[1:], strict=False)]
    assert all(1.0 <= gap < 2.0 for gap in gaps), gaps  # Retry-After: 1, plus at most base_s of jitter
    keys = {headers["Idempotency-Key"] for _, headers, _ in flaky.seen}
    assert len(keys) == 1  # one key for every attempt of the POST
    assert len({body for _, _, body in flaky.seen}) == 1  # and the very same bytes
    assert flaky.seen[0][1]["Authorization"] == "Bearer k"


async def test_every_post_gets_a_key_of_its_own(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky([])
    url = await _serve(aiohttp_server, flaky)
    async with AsyncClient(url, "k") as client:
        await client.ingest(DOCS * 1, "c", batch_size=1)
        await client.ingest_batch("c", DOCS, idempotency_key="mine-1")
    keys = [headers["Idempotency-Key"] for _, headers, _ in flaky.seen]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert keys[2] == "mine-1"


async def test_a_busy_idempotency_key_409_is_retried_and_other_errors_are_not(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky([(409, {"Retry-After": "1"})])
    url = await _serve(aiohttp_server, flaky)
    async with AsyncClient(url, "k", retry=RetryPolicy(base_s=0.01)) as client:
        assert (await client.ingest_batch("c", DOCS)).job_id == "job_1"
        assert len(flaky.seen) == 2
        flaky.script = [(404, {})]
        with pytest.raises(NotFound):
            await client.ingest_batch("c", DOCS)
        assert len(flaky.seen) == 3


async def test_retries_stop_at_max_attempts_or_when_retry_after_is_past_max_time(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky([(503, {})] * 10)
    url = await _serve(aiohttp_server, flaky)
    async with AsyncClient(url, "k", retry=RetryPolicy(max_attempts=3, base_s=0.01)) as client:
        with pytest.raises(Unavailable) as raised:
            await client.ingest_batch("c", DOCS)
    assert raised.value.status == 503
    assert len(flaky.seen) == 3
    flaky.script = [(429, {"Retry-After": "3600"})]
    started = time.monotonic()
    async with AsyncClient(url, "k", retry=RetryPolicy(max_time_s=60)) as client:
        with pytest.raises(RateLimited) as limited:
            await client.ingest_batch("c", DOCS)
    assert limited.value.retry_after == 3600
    assert time.monotonic() - started < 5


async def test_the_sync_client_retries_the_same_way(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky([(503, {"Retry-After": "1"})])
    url = await _serve(aiohttp_server, flaky)

    def run() -> Any:
        with Client(url, "k", retry=RetryPolicy(base_s=0.01)) as client:
            return client.ingest_batch("c", DOCS), client.wait("job_1", timeout_s=5)

    accepted, job = await asyncio.to_thread(run)
    assert accepted.job_id == job.id == "job_1"
    assert job.state.value == "succeeded"
    assert len(flaky.seen) == 2
    assert flaky.seen[0][1]["Idempotency-Key"] == flaky.seen[1][1]["Idempotency-Key"]


async def test_a_refused_connection_is_retried_then_raised_as_unavailable() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    async with AsyncClient(f"http://127.0.0.1:{port}", "k", retry=RetryPolicy(max_attempts=3, base_s=0.2)) as client:
        with pytest.raises(Unavailable) as raised:
            await client.list_collections()
    assert raised.value.status == 0
    assert "Connect" in raised.value.detail
    assert time.monotonic() - started < 5


async def test_wait_long_polls_and_raises_timeout_when_the_job_does_not_finish(aiohttp_server: ServerFactory) -> None:
    polls: list[str | None] = []

    async def running(request: web.Request) -> web.Response:
        polls.append(request.query.get("wait"))
        if request.query.get("wait"):
            await asyncio.sleep(min(float(request.query["wait"]), 0.3))  # held, as the gateway holds it
        return web.json_response({**JOB, "state": "running", "indexed": 0})

    app = web.Application()
    app.router.add_get("/v1/jobs/{job_id}", running)
    server = await aiohttp_server(app)
    async with AsyncClient(str(server.make_url("")).rstrip("/"), "k") as client:
        with pytest.raises(Timeout):
            await client.wait("job_1", timeout_s=1.0)
    assert polls[0] is None  # the job as it is now first
    waits = [float(w) for w in polls[1:] if w is not None]
    assert len(waits) == len(polls) - 1 >= 2
    assert all(0 < w <= 1.0 for w in waits)  # never longer than the time left
