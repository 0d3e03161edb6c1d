"""Task time limits on a real worker service: the process boots its middleware, and a run over its limit
is interrupted, recorded as a failed attempt and retried, whether a plain actor or a work-queue token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.middleware import TimeLimit

from services.indexer import actors as indexer_actors
from services.indexer.main import build as build_indexer
from services.indexer.publishing import Outcome, Publisher
from shared import clock, keys
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.messaging import dispatch, tasks
from shared.messaging.workqueue import Entry, Priority
from shared.records import jobs
from shared.records.catalog import Collection
from shared.records.deadletters import DeadLetter
from shared.records.jobs import Job, JobKind, JobState
from shared.runtime import time_limits
from shared.runtime.broker import build_broker
from shared.runtime.worker import WorkerService, new_worker_service
from tests.integration.indexer.staging import make_collection

T = TypeVar("T")

SLOW_QUEUE = "slow"
# A run would take this long; every limit below is far shorter, so a run that ends did so early.
RUN_S = 30.0


def _wait(check: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    pytest.fail("timed out")


def _lease_keepers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lease-") and t.is_alive()]


class BootRecorder(dramatiq.Middleware):
    """Counts the ``process_boot`` events its broker emits."""

    def __init__(self) -> None:
        self.boots = 0

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.boots += 1


@pytest.fixture
def services() -> Iterator[Callable[[WorkerService], WorkerService]]:
    """Start worker services; each is stopped at the end of the test."""
    running: list[tuple[WorkerService, Any]] = []

    def start(service: WorkerService) -> WorkerService:
        running.append((service, service.start()))
        return service

    yield start
    for service, (worker, heartbeat) in running:
        service.stop(worker, heartbeat)


def test_starting_a_worker_service_boots_its_middleware_once(
    settings: Settings, services: Callable[[WorkerService], WorkerService]
) -> None:
    service = new_worker_service("test", settings, settings.require_redis_url(), {SLOW_QUEUE})
    recorder = BootRecorder()
    service.broker.add_middleware(recorder)
    limit = next(m for m in service.broker.middleware if isinstance(m, TimeLimit))
    clock_thread = limit.manager
    assert isinstance(clock_thread, threading.Thread) and not clock_thread.is_alive()

    services(service)

    assert recorder.boots == 1
    assert clock_thread.is_alive()  # TimeLimit's clock runs: limits are enforced
    service.boot()
    assert recorder.boots == 1  # booted once, however often asked


def test_the_indexers_maintenance_worker_polls_its_empty_queue_less_often(
    settings: Settings, store: LocalStore, services: Callable[[WorkerService], WorkerService]
) -> None:
    tuned = settings.model_copy(update={"worker_poll_ms": 50, "maintenance_poll_ms": 700})
    service = services(build_indexer(tuned, store=store))
    polls = {frozenset(w.consumers): w.worker_timeout for w in service._side_workers}
    assert polls == {frozenset({tasks.MAINTENANCE_QUEUE, f"{tasks.MAINTENANCE_QUEUE}.DQ"}): 700}


def test_compaction_and_cleanup_run_under_limits_of_their_own_and_other_indexer_actors_under_the_default(
    settings: Settings, store: LocalStore
) -> None:
    tuned = settings.model_copy(
        update={"task_time_limit_s": 60, "compaction_time_limit_s": 5400, "cleanup_time_limit_s": 1800}
    )
    service = build_indexer(tuned, store=store)
    try:
        limits = {
            name: time_limits.limit_ms(service.broker, dramatiq.MessageProxy(service.broker.get_actor(name).message()))
            for name in service.broker.get_declared_actors()
        }
    finally:
        service.close()

    assert limits == {
        "compact_collections": 5_400_000,
        "cleanup_store": 1_800_000,
        "refresh_stats": 60_000,
        "index_next": 60_000,
        "drop_collection": 60_000,
    }


class SlowRun(tasks.MaintenanceRun):
    tenant: str


SLOW_RUN: tasks.TaskSpec[SlowRun] = tasks.TaskSpec("slow_run", SLOW_QUEUE, SlowRun)


def test_a_plain_actor_over_its_time_limit_is_interrupted_retried_and_recorded(
    settings: Settings, redis_client: redis.Redis, services: Callable[[WorkerService], WorkerService]
) -> None:
    # Given a worker whose actor would run for RUN_S, under a limit of 0.3 s (and 2 retries)
    service = new_worker_service("test", settings, settings.require_redis_url(), {SLOW_QUEUE})

    def slow_run(**kwargs: Any) -> str:
        SLOW_RUN.parse(kwargs)
        redis_client.incr("test:starts")
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            time.sleep(0.02)
        redis_client.set("test:finished", "1")
        return "finished"

    SLOW_RUN.declare(service.broker, slow_run, time_limit_s=0.3)
    services(service)
    broker = build_broker(settings, settings.require_redis_url())
    redis_client.hset(keys.schedule("upkeep"), mapping={"run_id": "tick-1", "outcome": "enqueued"})

    # When it is sent
    SLOW_RUN.send(broker, SlowRun(schedule="upkeep", run_id="tick-1", tenant="acme"))
    broker.close()

    # Then every attempt is interrupted: the first, then both retries, and the message becomes a dead letter
    def letter() -> DeadLetter | None:
        ids: list[bytes] = redis_client.zrange(keys.dead_letters("acme"), 0, -1)  # type: ignore[assignment]
        raw = redis_client.get(keys.dead_letter(ids[0].decode())) if ids else None
        return DeadLetter.model_validate_json(raw) if isinstance(raw, bytes) else None

    dead = _wait(letter)
    assert dead.error == "time limit of 0.3 s exceeded" and dead.attempts == 3
    assert redis_client.get("test:starts") == b"3"
    assert not redis_client.exists("test:finished")
    # and the schedule run that asked says why it failed
    record = redis_client.hgetall(keys.schedule("upkeep"))
    assert (record[b"outcome"], record[b"detail"]) == (b"failed", b"time limit of 0.3 s exceeded")


class StuckPublisher(Publisher):
    """A publisher whose batches take RUN_S to add: what a hung store call looks like to the indexer."""

    def __init__(self, client: redis.Redis, store: LocalStore) -> None:
        super().__init__(client, store)
        self.starts = 0
        self.finished = 0
        self.kept_leases: list[bool] = []

    def add_batch(self, collection: Collection, batch_id: str, write_seq: int, job_id: str = "") -> Outcome:
        self.starts += 1
        self.kept_leases.append(any(t.name == "lease-index" for t in _lease_keepers()))
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            time.sleep(0.02)
        self.finished += 1
        return super().add_batch(collection, batch_id, write_seq, job_id)


def _create_job(redis_url: str, job: Job) -> None:
    async def create() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await jobs.create(client, job)
        finally:
            await client.aclose()

    asyncio.run(create())


def test_a_work_queue_token_over_its_time_limit_is_interrupted_counted_and_dead_lettered(
    settings: Settings, store: LocalStore, redis_client: redis.Redis, services: Callable[[WorkerService], WorkerService]
) -> None:
    # Given the indexer's actors on a worker with a 1 s limit (and 2 retries), whose publisher never finishes a batch
    limited = settings.model_copy(update={"task_time_limit_s": 1})
    service = new_worker_service("indexer", limited, limited.require_redis_url(), {tasks.INDEX_QUEUE})
    publisher = StuckPublisher(service.client, store)
    indexer_actors.declare(service.broker, service.client, publisher, limited)
    collection = make_collection(redis_client)
    stamp = clock.now()
    job = Job(id="job_slow", tenant="acme", collection="docs", kind=JobKind.INGEST, state=JobState.QUEUED,
              documents=1, created_at=stamp, updated_at=stamp)  # fmt: skip
    _create_job(limited.require_redis_url(), job)
    payload = tasks.IndexBatch(
        tenant="acme", collection="docs", collection_id=collection.id, batch_id="b1", job_id=job.id, write_seq=1
    )
    services(service)
    broker = build_broker(limited, limited.require_redis_url())

    # When its batch is queued
    dispatch.submit(
        redis_client,
        broker,
        tasks.INDEX_QUEUE,
        Entry(job.id, "acme", Priority.NORMAL, tasks.INDEX_BATCH.kwargs(payload), clock.now_ms()),
    )
    broker.close()

    # Then each claim of it is interrupted and counted, until the entry is a dead letter and the job dead
    def ended() -> Job | None:
        found = jobs.get(redis_client, job.id)
        return found if found is not None and found.state is JobState.DEAD else None

    dead = _wait(ended)
    assert dead.error == "time limit of 1 s exceeded" and dead.attempts == 3 and dead.dead_letter is not None
    raw = redis_client.get(keys.dead_letter(dead.dead_letter))
    assert isinstance(raw, bytes) and DeadLetter.model_validate_json(raw).error == "time limit of 1 s exceeded"
    assert (publisher.starts, publisher.finished) == (3, 0)
    # The claim's lease was kept while each run lasted, and no keeper outlived its run
    assert publisher.kept_leases == [True, True, True]
    assert _lease_keepers() == []
    # and the last claim is released (the job's end is recorded a moment before its claim goes).
    _wait(lambda: redis_client.hlen(keys.wq_claims(tasks.INDEX_QUEUE)) == 0)
