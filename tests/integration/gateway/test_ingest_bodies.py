"""Ingest bodies prepared in worker processes: the same batch files and errors as on the gateway's own thread."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from pydantic import ValidationError

from services.gateway.http.bodies import OFF_LOOP_BYTES
from services.gateway.http.ingest_bodies import IngestBodies, prepare_ingest
from shared.index.documents import decode_batch
from shared.messaging.workqueue import Priority
from shared.priority import autogroup_niceness, thread_niceness

DEPTH = 32
MOST = 1_000


class CountingThreads(ThreadPoolExecutor):
    """The gateway's body thread, counting what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def threads() -> Iterator[CountingThreads]:
    pool = CountingThreads()
    yield pool
    pool.shutdown()


@pytest.fixture
def bodies(threads: CountingThreads) -> Iterator[IngestBodies]:
    prepared = IngestBodies(1, threads, max_depth=DEPTH, max_documents=MOST)
    yield prepared
    prepared.close()


def _body(n: int, *, bad_at: int | None = None, priority: str = "high") -> bytes:
    rng = np.random.default_rng(n)
    docs: list[dict[str, Any]] = []
    for i in range(n):
        vector = base64.b64encode(rng.standard_normal(384).astype("<f4").tobytes()).decode()
        doc: dict[str, Any] = {"id": f"d{i}", "text": f"text {i}", "vector_b64": vector, "metadata": {"i": i}}
        if i == bad_at:
            doc["metadata"] = "not an object"
        docs.append(doc)
    raw = json.dumps({"documents": docs, "priority": priority}).encode()
    assert len(raw) >= OFF_LOOP_BYTES
    return raw


async def test_a_large_body_is_prepared_by_a_worker_process_as_the_thread_would(
    bodies: IngestBodies, threads: CountingThreads
) -> None:
    raw = _body(200)
    await bodies.warm()
    prepared = await bodies.prepare(raw)
    assert threads.calls == 0
    assert prepared == prepare_ingest(raw, DEPTH, MOST)
    assert prepared.documents == 200
    assert prepared.priority is Priority.HIGH
    assert prepared.batch is not None
    stored = decode_batch(prepared.batch.documents)
    assert [d.id for d in stored.documents] == [f"d{i}" for i in range(200)]
    assert stored.documents[7].metadata == {"i": 7}


async def test_a_refused_body_raises_what_the_thread_raises(bodies: IngestBodies, threads: CountingThreads) -> None:
    raw = _body(100, bad_at=60)
    await bodies.warm()
    with pytest.raises(ValidationError) as worker:
        await bodies.prepare(raw)
    with pytest.raises(ValidationError) as thread:
        prepare_ingest(raw, DEPTH, MOST)
    assert worker.value.errors(include_url=False) == thread.value.errors(include_url=False)
    assert [e["loc"][:3] for e in worker.value.errors()] == [("documents", 60, "metadata")]
    assert threads.calls == 1  # decoded again on the thread, for its error

    with pytest.raises(web.HTTPBadRequest) as bad:
        await bodies.prepare(raw[:-1])
    assert "not valid JSON" in (bad.value.text or "")


async def test_too_many_documents_come_back_counted_and_unencoded() -> None:
    small = IngestBodies(1, None, max_depth=DEPTH, max_documents=150)
    await small.warm()
    try:
        prepared = await small.prepare(_body(151))
    finally:
        small.close()
    assert (prepared.documents, prepared.batch) == (151, None)


async def test_a_killed_worker_costs_no_request(bodies: IngestBodies, threads: CountingThreads) -> None:
    raw = _body(100)
    await bodies.warm()
    expected = await bodies.prepare(raw)
    pool = bodies._pool
    assert pool is not None and threads.calls == 0
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)
    assert await bodies.prepare(raw) == expected  # on the thread, while the pool is replaced
    assert bodies._pool is not pool and threads.calls == 1
    await bodies.warm()
    assert await bodies.prepare(raw) == expected  # the new workers
    assert threads.calls == 1


async def test_the_workers_start_with_the_first_large_body_which_the_thread_serves_meanwhile(
    bodies: IngestBodies, threads: CountingThreads
) -> None:
    assert await bodies.prepare(b'{"documents": [{"id": "a", "text": "small"}]}') is not None
    assert bodies._pool is None  # a small body starts nothing
    raw = _body(100)
    first = await bodies.prepare(raw)
    assert bodies._pool is not None and threads.calls == 2
    await bodies.warm()
    assert await bodies.prepare(raw) == first
    assert threads.calls == 2


async def test_no_processes_prepares_every_body_on_the_thread(threads: CountingThreads) -> None:
    bodies = IngestBodies(0, threads, max_depth=DEPTH, max_documents=MOST)
    await bodies.warm()
    raw = _body(100)
    assert await bodies.prepare(raw) == prepare_ingest(raw, DEPTH, MOST)
    assert (threads.calls, bodies._pool) == (1, None)
    bodies.close()


def _priority_within(pid: int, expected: tuple[set[int], int | None], timeout_s: float) -> tuple[set[int], int | None]:
    """``pid``'s threads' niceness and its autogroup's, once they are ``expected`` or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while (seen := (thread_niceness(pid), autogroup_niceness(pid))) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


async def test_the_workers_run_at_the_niceness_given(threads: CountingThreads) -> None:
    # Given body workers asked to run at niceness 7 (the gateway itself stays where it is),
    own, group = os.getpriority(os.PRIO_PROCESS, 0), autogroup_niceness()
    bodies = IngestBodies(2, threads, max_depth=DEPTH, max_documents=MOST, nice=7)
    try:
        await bodies.warm()
        assert await bodies.prepare(_body(100)) is not None
        pool = bodies._pool
        assert pool is not None and len(pool._processes) == 2
        # then every thread of every worker has it,
        # in the gateway's session and its scheduling group, which they leave as it is (a worker the pool
        # started for the body may still be running its initializer: waited for, up to 10 s),
        expected = ({max(7, own)}, group)
        for pid in pool._processes:
            assert _priority_within(pid, expected, timeout_s=10) == expected and os.getsid(pid) == os.getsid(0)
        # while the gateway's own priority and group stay as they were.
        assert autogroup_niceness() == group
        assert os.getpriority(os.PRIO_PROCESS, 0) == own
    finally:
        bodies.close()
