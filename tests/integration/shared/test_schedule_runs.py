"""A schedule run's outcome follows its task through a real Dramatiq worker: running, retrying, then how it ended."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker

from shared import keys
from shared.config import Settings
from shared.errors import PermanentError
from shared.records.schedule_state import Outcome
from shared.runtime.broker import build_broker
from shared.runtime.schedule_runs import ScheduleRuns

QUEUE = "schedule-runs-test"


@pytest.fixture
def broker(settings: Settings, redis_client: redis.Redis) -> Iterator[dramatiq.Broker]:
    quick = settings.model_copy(update={"max_retries": 2, "min_backoff_ms": 10, "max_backoff_ms": 50})
    built = build_broker(quick, quick.require_redis_url(), extra=[ScheduleRuns(redis_client)])
    built.declare_queue(QUEUE)
    yield built
    built.close()


def _start_worker(broker: dramatiq.Broker) -> Worker:
    worker = Worker(broker, queues={QUEUE}, worker_threads=1, worker_timeout=50)
    worker.start()
    return worker


def _fired(client: redis.Redis, name: str, run_id: str) -> None:
    """Record a run of ``name`` as the scheduler leader does before it enqueues the action."""
    client.hset(keys.schedule(name), mapping={"run_id": run_id, "outcome": Outcome.ENQUEUED.value})


def _watch(client: redis.Redis, name: str, until: Callable[[str], bool], timeout_s: float = 30) -> list[str]:
    """Every distinct outcome the schedule's record shows, in order, until ``until`` holds for one."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = keys.text(client.hget(keys.schedule(name), "outcome") or b"")
        if not seen or seen[-1] != outcome:
            seen.append(outcome)
        if until(outcome):
            return seen
        time.sleep(0.002)
    pytest.fail(f"the run never finished: {seen}")


def _finished(outcome: str) -> bool:
    return outcome in (Outcome.SUCCEEDED, Outcome.FAILED)


def test_a_transient_failure_shows_retrying_and_the_retry_that_succeeds_is_recorded(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    # Given an action that fails on its first try and returns a summary on the next
    calls: list[int] = []

    def flaky(**_: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("object store unavailable")
        time.sleep(0.2)  # long enough for the watcher to see it running
        return "compacted 2 collections"

    actor = dramatiq.actor(actor_name="flaky", queue_name=QUEUE, broker=broker)(flaky)
    _fired(redis_client, "compaction", "run-1")

    # When a schedule run's message is processed
    actor.send(schedule="compaction", run_id="run-1")
    worker = _start_worker(broker)
    try:
        seen = _watch(redis_client, "compaction", _finished)
    finally:
        worker.stop()

    # Then the run went through retrying (not failed) to succeeded, with the summary as its detail
    assert Outcome.FAILED not in seen and Outcome.RETRYING in seen, seen
    assert seen[-1] == Outcome.SUCCEEDED
    record = {keys.text(k): keys.text(v) for k, v in redis_client.hgetall(keys.schedule("compaction")).items()}
    assert record["detail"] == "compacted 2 collections" and record["finished_at"]


def test_a_permanent_error_fails_the_run_at_once(broker: dramatiq.Broker, redis_client: redis.Redis) -> None:
    def broken(**_: Any) -> str:
        raise PermanentError("the collection's index is corrupt")

    actor = dramatiq.actor(actor_name="broken", queue_name=QUEUE, broker=broker, throws=(PermanentError,))(broken)
    _fired(redis_client, "cleanup", "run-7")

    actor.send(schedule="cleanup", run_id="run-7")
    worker = _start_worker(broker)
    try:
        seen = _watch(redis_client, "cleanup", _finished)
    finally:
        worker.stop()

    assert Outcome.RETRYING not in seen and seen[-1] == Outcome.FAILED
    detail = keys.text(redis_client.hget(keys.schedule("cleanup"), "detail") or b"")
    assert detail == "PermanentError: the collection's index is corrupt"


def test_a_message_of_an_older_run_leaves_the_newer_run_alone(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    def quick(**_: Any) -> str:
        return "done"

    actor = dramatiq.actor(actor_name="quick", queue_name=QUEUE, broker=broker)(quick)
    _fired(redis_client, "stats", "run-2")  # run-1's message is still queued when run-2 fires

    actor.send(schedule="stats", run_id="run-1")
    message = actor.send()  # a message sent directly, not by a schedule: nothing to report
    worker = _start_worker(broker)
    try:
        broker.join(QUEUE, timeout=10_000)
        worker.join()
    finally:
        worker.stop()

    assert message.message_id
    record = {keys.text(k): keys.text(v) for k, v in redis_client.hgetall(keys.schedule("stats")).items()}
    assert record == {"run_id": "run-2", "outcome": Outcome.ENQUEUED.value}
