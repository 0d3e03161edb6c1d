"""A job's lifecycle against a real Redis: create, begin per stage, finish once; cancel and requeue."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from shared import clock, keys
from shared.records import jobs
from shared.records.jobs import Job, JobKind, JobState


def _job(job_id: str) -> Job:
    stamp = clock.now()
    return Job(
        id=job_id,
        tenant="acme",
        collection="docs",
        kind=JobKind.INGEST,
        state=JobState.QUEUED,
        documents=10,
        created_at=stamp,
        updated_at=stamp,
    )


async def test_a_job_begins_each_stage_counts_attempts_of_its_work_and_finishes_once(
    aio_redis: aioredis.Redis, redis_client: redis.Redis
) -> None:
    await jobs.create(aio_redis, _job("job_a"))

    assert jobs.begin(redis_client, "job_a", attempt=1)
    assert jobs.begin(redis_client, "job_a", attempt=2)  # the first stage's work redelivered: one more attempt
    assert jobs.begin(redis_client, "job_a", attempt=1)  # the next stage's first attempt: no more
    running = jobs.get(redis_client, "job_a")
    assert running is not None and running.state is JobState.RUNNING and running.attempts == 2
    assert jobs.begin(redis_client, "job_a", attempt=3)  # the next stage's work, redelivered twice
    running = jobs.get(redis_client, "job_a")
    assert running is not None and running.attempts == 3
    assert running.started_at is not None

    assert jobs.finish(redis_client, "job_a", JobState.SUCCEEDED, indexed=10, index_version="v1")
    assert not jobs.finish(redis_client, "job_a", JobState.FAILED, error="late")  # it ended already
    assert not jobs.begin(redis_client, "job_a", attempt=1)  # an ended job runs nothing
    done = jobs.get(redis_client, "job_a")
    assert done is not None and (done.state, done.indexed, done.index_version, done.error) == (
        JobState.SUCCEEDED,
        10,
        "v1",
        None,
    )


async def test_a_cancelled_job_runs_nothing_and_a_requeued_one_starts_afresh(
    aio_redis: aioredis.Redis, redis_client: redis.Redis
) -> None:
    await jobs.create(aio_redis, _job("job_b"))
    assert jobs.begin(redis_client, "job_b", attempt=1)
    jobs.progress(redis_client, "job_b", embedded=4)

    assert await jobs.acancel(aio_redis, "job_b")
    assert not jobs.begin(redis_client, "job_b", attempt=1)
    assert not jobs.finish(redis_client, "job_b", JobState.SUCCEEDED)

    assert await jobs.requeue(aio_redis, "job_b")
    again = await jobs.aget(aio_redis, "job_b")
    assert again is not None and again.state is JobState.QUEUED and again.embedded == 0 and again.started_at is None
    assert not await jobs.requeue(aio_redis, "job_b")  # only an ended job is requeued
    assert jobs.begin(redis_client, "job_b", attempt=1)  # the retry's first attempt is the job's second
    again = await jobs.aget(aio_redis, "job_b")
    assert again is not None and again.attempts == 2


def test_finish_takes_only_an_ending_and_an_unknown_job_neither_begins_nor_finishes(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="not running"):
        jobs.finish(redis_client, "job_x", JobState.RUNNING)
    assert not jobs.begin(redis_client, "job_x", attempt=1)
    assert not jobs.finish(redis_client, "job_x", JobState.FAILED, error="boom")
    assert not redis_client.exists(keys.job("job_x"))
