"""Job progress over HTTP with in-process workers on a real Redis: counts per chunk, progress and ETA,
and the long-poll of ``GET /v1/jobs/{id}?wait=``."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import redis

from shared import keys
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from tests.integration.gateway.conftest import Api, running_workers

DOCUMENTS = 40
MODEL_BATCH = 2  # a chunk is 4 model batches: 8 documents, so 5 chunks


async def _collection(api: Api) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status in (200, 201)


async def _ingest(api: Api, count: int) -> str:
    body = {"documents": [{"id": f"d{i}", "text": f"document {i} about topic {i}"} for i in range(count)]}
    resp = await api.client.post("/v1/collections/docs/documents", json=body, headers=api.auth)
    assert resp.status == 202, await resp.text()
    job_id: str = (await resp.json())["job_id"]
    return job_id


async def _get(api: Api, job_id: str, query: str = "") -> tuple[int, dict[str, Any]]:
    resp = await api.client.get(f"/v1/jobs/{job_id}{query}", headers=api.auth)
    return resp.status, await resp.json(content_type=None)


async def _finished(api: Api, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        _, job = await _get(api, job_id, "?wait=5")
        if job["state"] not in ("queued", "running"):
            return job
    raise AssertionError(job_id)


class EmbeddedWrites:
    """Every value the job's ``embedded`` counter is set to, as Redis's MONITOR sees the commands."""

    STOP = "embedded-writes-stop"

    def __init__(self, redis_url: str, job_id: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.job_key = keys.job(job_id)
        self.values: list[int] = []
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with self.client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self.ready.set()
            for seen in monitor.listen():
                command = seen["command"]
                if self.STOP in command:
                    return
                if command.startswith("HSET") and self.job_key in command:
                    self.values += [int(v) for v in re.findall(r"embedded\W+(\d+)", command)]

    def __enter__(self) -> EmbeddedWrites:
        self.ready = threading.Event()
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.client.echo(self.STOP)
        self.thread.join(10)
        self.client.close()


async def test_embedded_advances_after_every_chunk_and_progress_ends_at_one(
    api: Api, settings: Settings, store: LocalStore, encoder: Encoder, redis_url: str
) -> None:
    await _collection(api)
    job_id = await _ingest(api, DOCUMENTS)
    status, queued = await _get(api, job_id)
    assert status == 200
    assert queued["progress"] == 0 and queued["eta_seconds"] is None

    small = Encoder(encoder.model, batch_size=MODEL_BATCH)
    with EmbeddedWrites(redis_url, job_id) as writes, running_workers(settings, store, small):
        job = await _finished(api, job_id)
    assert job["state"] == "succeeded", job
    assert job["embedded"] == job["indexed"] == DOCUMENTS
    assert job["progress"] == 1 and job["eta_seconds"] == 0
    # One report per chunk of 8 documents, then the batch's count once its vectors are stored.
    assert writes.values == [8, 16, 24, 32, 40, 40], writes.values


async def test_a_long_poll_answers_when_the_job_changes(api: Api) -> None:
    await _collection(api)
    job_id = await _ingest(api, 2)
    loop = asyncio.get_running_loop()

    waiting = asyncio.create_task(_get(api, job_id, "?wait=30"))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    started = loop.time()
    assert (await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth)).status == 200
    status, job = await waiting
    assert status == 200 and job["state"] == "cancelled"
    assert loop.time() - started < 10  # well before the 30 s it would have waited

    # A finished job answers at once.
    started = loop.time()
    assert (await _get(api, job_id, "?wait=30"))[1]["state"] == "cancelled"
    assert loop.time() - started < 10


async def test_a_long_poll_with_nothing_happening_answers_when_the_time_is_up(api: Api) -> None:
    await _collection(api)
    job_id = await _ingest(api, 2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, job = await _get(api, job_id, "?wait=1.5")
    assert status == 200 and job["state"] == "queued"
    assert loop.time() - started >= 1.5


async def test_the_wait_is_validated(api: Api) -> None:
    await _collection(api)
    job_id = await _ingest(api, 1)
    for bad in ("61", "-1", "soon"):
        status, problem = await _get(api, job_id, f"?wait={bad}")
        assert status == 422, (bad, problem)
    assert (await _get(api, job_id, "?wait=60&x=1"))[0] == 422  # unknown parameters are refused too
    assert (await _get(api, "job_nope", "?wait=5"))[0] == 404


async def test_a_long_poll_ends_when_the_gateway_shuts_down(api: Api) -> None:
    await _collection(api)
    job_id = await _ingest(api, 1)
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(_get(api, job_id, "?wait=60"))
    await asyncio.sleep(0.5)
    started = loop.time()
    await api.client.server.close()
    status, job = await waiting
    assert status == 200 and job["state"] == "queued"
    assert loop.time() - started < 30  # not the 60 s it asked for
