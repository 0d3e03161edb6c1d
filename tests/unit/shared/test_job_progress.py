"""A job's progress (embedding 90 %, indexing the rest) and its estimate of the time left."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.clock import now
from shared.records import jobs
from shared.records.jobs import Job, JobKind, JobState


def _job(state: JobState, *, kind: JobKind = JobKind.INGEST, started_s_ago: float | None = 10.0, **counts: int) -> Job:
    at = now()
    return Job(
        id="job_1",
        tenant="acme",
        collection="docs",
        kind=kind,
        state=state,
        documents=counts.pop("documents", 100),
        created_at=at - timedelta(seconds=60),
        updated_at=at,
        started_at=None if started_s_ago is None else at - timedelta(seconds=started_s_ago),
        **counts,
    )


def test_a_queued_job_has_no_progress_and_no_estimate() -> None:
    job = _job(JobState.QUEUED, started_s_ago=None)
    assert job.progress == 0 and job.eta_seconds is None


def test_a_running_job_without_progress_has_no_estimate_yet() -> None:
    assert _job(JobState.RUNNING).eta_seconds is None


def test_embedding_counts_for_nine_tenths_and_the_estimate_follows_the_rate_so_far() -> None:
    job = _job(JobState.RUNNING, embedded=50)
    assert job.progress == pytest.approx(0.45)
    # 10 s for 45 %: 55 % more at that rate takes about 12.2 s.
    assert job.eta_seconds == pytest.approx(10 * 0.55 / 0.45, abs=0.2)
    embedded = _job(JobState.RUNNING, embedded=100)
    assert embedded.progress == pytest.approx(0.9)
    assert embedded.eta_seconds == pytest.approx(10 / 9, abs=0.2)


def test_a_finished_job_has_no_time_left() -> None:
    done = _job(JobState.SUCCEEDED, embedded=100, indexed=100)
    assert done.progress == 1 and done.eta_seconds == 0
    failed = _job(JobState.FAILED, embedded=30)
    assert failed.progress == pytest.approx(0.27) and failed.eta_seconds == 0


def test_a_delete_job_progresses_when_its_effect_is_published() -> None:
    assert _job(JobState.RUNNING, kind=JobKind.DELETE, documents=3).progress == 0
    assert _job(JobState.SUCCEEDED, kind=JobKind.DELETE, documents=3, indexed=3).progress == 1


def test_progress_and_estimate_are_in_the_answer_but_not_in_the_record() -> None:
    job = _job(JobState.RUNNING, embedded=50)
    assert {"progress", "eta_seconds"} <= set(job.public())
    stored = jobs._to_hash(job)
    assert "progress" not in stored and "eta_seconds" not in stored
    assert jobs._from_hash(dict(stored.items())) == job
