"""The maintenance actors on a real indexer worker: they run from the queue and report their outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
import redis

from services.indexer.main import build as build_indexer
from services.indexer.publishing import Publisher
from shared import clock, keys
from shared.config import Settings
from shared.index import index_stats
from shared.index.storage import LocalStore
from shared.messaging import tasks
from shared.messaging.events import IndexPublished
from shared.records import schedule_state
from shared.records.schedule_state import Outcome
from shared.records.schedules import Action, MissedRuns, Schedule
from shared.runtime.broker import build_broker
from tests.integration.indexer.staging import load_live, make_collection, stage, top_ids, unit_vectors
from tests.streams import events_of

T = TypeVar("T")


def _wait(check: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    pytest.fail("timed out")


def _fired(client: redis.Redis, name: str, run_id: str) -> None:
    """Record a run of ``name`` as the scheduler leader does before it enqueues the action."""
    client.hset(keys.schedule(name), mapping={"run_id": run_id, "scheduled_for": "0", "fired_at": "0", "token": "1",
                                              "outcome": "enqueued"})  # fmt: skip


def _finished_run(client: redis.Redis, schedule: Schedule) -> schedule_state.LastRun | None:
    """The schedule's last run, once it has an outcome."""
    view = schedule_state.view(schedule, client.hgetall(keys.schedule(schedule.name)), clock.from_millis(0))
    run = view.last_run
    return run if run is not None and run.outcome in (Outcome.SUCCEEDED, Outcome.FAILED) else None


def test_compaction_and_statistics_run_from_the_queue_and_report_success(
    settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    # A tier of three segments is full: the scheduled run merges them.
    settings = settings.model_copy(update={"compaction_merge_factor": 3})
    service = build_indexer(settings, store=store)
    worker, heartbeat = service.start()
    collection = make_collection(redis_client)
    publisher = Publisher(redis_client, store)
    vectors = unit_vectors(30, seed=1)
    for b in range(3):
        stage(store, collection, f"b{b}", [f"d{b * 10 + i}" for i in range(10)], vectors[b * 10 : (b + 1) * 10])
        publisher.add_batch(collection, f"b{b}", write_seq=b + 1)
    broker = build_broker(settings, settings.require_redis_url())
    schedule = Schedule(name="compaction", cron="0 * * * *", action=Action.COMPACT, missed=MissedRuns.RUN_ONCE)

    _fired(redis_client, "compaction", "tick-1")
    tasks.COMPACT_COLLECTIONS.send(broker, tasks.CompactCollections(schedule="compaction", run_id="tick-1"))

    run = _wait(lambda: _finished_run(redis_client, schedule))
    assert run.outcome is Outcome.SUCCEEDED and run.detail is not None and "3 segments merged" in run.detail
    published = events_of(redis_client, IndexPublished)
    assert [(e.collection, e.documents, e.segments) for e in published] == [("docs", 30, 1)]

    tasks.REFRESH_STATS.send(broker, tasks.RefreshStats())

    def stored() -> index_stats.IndexStats | None:
        raw = redis_client.get(keys.collection_stats("acme", "docs"))
        return index_stats.IndexStats.model_validate_json(raw) if isinstance(raw, bytes) else None

    parsed = _wait(stored)
    assert (parsed.vectors, parsed.documents, parsed.segments, parsed.approximate_segments) == (30, 30, 1, 0)
    assert parsed.version == published[0].version and parsed.memory_bytes > 30 * 384 * 4
    age = parsed.age_seconds(datetime.now(UTC))
    assert parsed.index_created_at is not None and age is not None and 0 <= age < 60
    broker.close()
    service.stop(worker, heartbeat)


def test_cleanup_runs_from_the_queue_reports_what_it_removed_and_keeps_the_live_index(
    settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    # Given two published versions, no retention and only the live manifest kept
    tight = settings.model_copy(update={"cleanup_retention_s": 0, "cleanup_keep_manifests": 1})
    service = build_indexer(tight, store=store)
    worker, heartbeat = service.start()
    broker = build_broker(tight, tight.require_redis_url())
    try:
        collection = make_collection(redis_client)
        publisher = Publisher(redis_client, store)
        vectors = unit_vectors(20, seed=2)
        for b in range(2):
            stage(store, collection, f"b{b}", [f"d{b * 10 + i}" for i in range(10)], vectors[b * 10 : (b + 1) * 10])
            publisher.add_batch(collection, f"b{b}", write_seq=b + 1)
        live = load_live(publisher, store, collection)
        time.sleep(1.1)  # every object is now older than the (zero) retention, to the second
        schedule = Schedule(name="cleanup", cron="0 2 * * *", action=Action.CLEANUP, missed=MissedRuns.RUN_ONCE)

        # When the cleanup schedule's action runs from the queue
        _fired(redis_client, "cleanup", "tick-1")
        tasks.CLEANUP_STORE.send(broker, tasks.CleanupStore(schedule="cleanup", run_id="tick-1"))

        run = _wait(lambda: _finished_run(redis_client, schedule))
    finally:
        broker.close()
        service.stop(worker, heartbeat)

    # Then it reports the first version's manifest removed, and the live version still loads and searches
    assert run.outcome is Outcome.SUCCEEDED and run.detail is not None, run
    assert run.detail.startswith("removed 1 manifests, 0 segments"), run.detail
    again = load_live(publisher, store, collection)
    assert again.version == live.version
    assert top_ids(again, vectors[15], 1) == ["d15"]
