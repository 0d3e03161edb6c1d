"""Job records: what a client polls, cancels and retries.

A job is one accepted write (an ingest batch or a delete). Its record is a Redis hash; every state
change goes through a Lua script that allows it only from the right states, so a late or
duplicated message can never move a finished job backwards. Each tenant's jobs are also indexed
by creation time for listing. Records expire ``retention_s`` after their last change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared import keys, scripts
from shared.clock import millis, now
from shared.constants import JOB_RETENTION_S
from shared.messaging.workqueue import Priority
from shared.records import paging

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class JobState(StrEnum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"


class JobKind(StrEnum):
    """What a job does."""

    INGEST = "ingest"
    DELETE = "delete"
    ROLLBACK = "rollback"


FINISHED: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DEAD})
RETRYABLE: Final = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.DEAD})
ACTIVE: Final = frozenset({JobState.QUEUED, JobState.RUNNING})
#: The share of an ingest job's progress that embedding counts for; indexing counts for the rest.
EMBEDDING_SHARE: Final = 0.9


class Task(BaseModel):
    """The job's first unit of work, kept so the job can be queued again (retry, replay)."""

    model_config = ConfigDict(frozen=True)

    queue: str
    arguments: dict[str, Any]


class Job(BaseModel):
    """A job record as stored; ``public()`` is what the API answers."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    collection: str
    kind: JobKind
    state: JobState
    priority: Priority = Priority.NORMAL
    documents: int
    embedded: int = 0
    indexed: int = 0
    attempts: int = 0
    batch_id: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    error: str | None = None
    index_version: str | None = None
    dead_letter: str | None = None
    task: Task | None = Field(default=None, exclude=True)
    retention_s: int = Field(default=JOB_RETENTION_S, exclude=True)

    @computed_field(  # type: ignore[prop-decorator]
        description=(
            "How far the job is, 0 to 1: for an ingest, embedding counts for 0.9 (in proportion to `embedded`) "
            "and indexing for the rest (`indexed`); other jobs go from 0 to 1 when their effect is published. "
            "1 once it succeeded."
        )
    )
    @property
    def progress(self) -> float:
        if self.state is JobState.SUCCEEDED:
            return 1.0
        if self.documents <= 0:
            return 0.0
        indexed = min(self.indexed, self.documents) / self.documents
        if self.kind is not JobKind.INGEST:
            return round(indexed, 4)
        embedded = min(self.embedded, self.documents) / self.documents
        return round(EMBEDDING_SHARE * embedded + (1 - EMBEDDING_SHARE) * indexed, 4)

    @computed_field(  # type: ignore[prop-decorator]
        description=(
            "Estimated seconds until the job finishes, from its rate so far (the time since it started over "
            "its progress); null while that cannot be estimated yet (queued, or no progress made), 0 once "
            "it finished."
        )
    )
    @property
    def eta_seconds(self) -> float | None:
        if self.state in FINISHED:
            return 0.0
        done = self.progress
        if self.state is not JobState.RUNNING or self.started_at is None or done <= 0:
            return None
        if done >= 1:
            return 0.0
        elapsed = max(0.0, (now() - self.started_at).total_seconds())
        return round(elapsed * (1 - done) / done, 1)

    def public(self) -> dict[str, Any]:
        """The JSON the API answers."""
        return self.model_dump(mode="json")


def new_job_id() -> str:
    """A random, URL-safe job id."""
    return "job_" + uuid.uuid4().hex


def _to_hash(job: Job) -> dict[str, str]:
    data = job.model_dump(mode="json", exclude={"task", "retention_s", "progress", "eta_seconds"})
    out = {k: str(v) for k, v in data.items() if v is not None}
    out["retention_s"] = str(job.retention_s)
    if job.task is not None:
        out["task"] = job.task.model_dump_json()
    return out


def _from_hash(raw: Mapping[bytes | str, bytes | str]) -> Job | None:
    if not raw:
        return None
    data: dict[str, Any] = {keys.text(k): keys.text(v) for k, v in raw.items()}
    if "task" in data:
        data["task"] = json.loads(data["task"])
    data.pop("published", None)
    data.pop("attempts_base", None)
    return Job.model_validate(data)


# A job changes state in one place, this module, and each change is one atomic script:
#   create (queued) -> begin (running; each stage of a run) -> finish (succeeded, failed or dead),
#   cancel (from queued or running, unless its effect was published), requeue (a retry of one that
#   ended without success).
# Moves a job to a new state only from one that allows it: 1 moved, 0 unknown job, -1 not allowed.
_TRANSITION: Final = scripts.get("job_transition")
# Starts a stage unless the job was cancelled or ended: 1 running, 0 unknown job, -1 not to run.
_BEGIN: Final = scripts.get("job_begin")

_ALLOWED_FROM: Final[dict[JobState, tuple[JobState, ...]]] = {
    JobState.SUCCEEDED: (JobState.QUEUED, JobState.RUNNING),
    JobState.FAILED: (JobState.QUEUED, JobState.RUNNING),
    JobState.DEAD: (JobState.QUEUED, JobState.RUNNING),
    JobState.CANCELLED: (JobState.QUEUED, JobState.RUNNING),
    JobState.QUEUED: (JobState.FAILED, JobState.CANCELLED, JobState.DEAD),
}
#: The states :func:`finish` ends a job in.
ENDINGS: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD})


def _transition_args(state: JobState, fields: Mapping[str, str | int | None]) -> list[str]:
    guard = "guard" if state is JobState.CANCELLED else ""
    args = [state.value, ",".join(_ALLOWED_FROM[state]), guard, "updated_at", now().isoformat()]
    for name, value in fields.items():
        if value is not None:
            args += [name, str(value)]
    return args


def _ending_args(state: JobState, fields: Mapping[str, str | int | None]) -> list[str]:
    if state not in ENDINGS:
        raise ValueError(f"a job ends succeeded, failed or dead, not {state.value}")
    return _transition_args(state, fields)


def _create(pipe: Any, job: Job) -> None:
    pipe.hset(keys.job(job.id), mapping=_to_hash(job))
    pipe.expire(keys.job(job.id), job.retention_s)
    pipe.zadd(keys.tenant_jobs(job.tenant), {job.id: millis(job.created_at)})


async def create(client: aioredis.Redis, job: Job) -> None:
    """Store a new job record and index it under its tenant."""
    async with client.pipeline(transaction=True) as pipe:
        _create(pipe, job)
        await pipe.execute()


def create_many(client: redis.Redis, records: Iterable[Job], *, chunk: int = 5000) -> int:
    """Store job records as :func:`create` does, pipelined ``chunk`` at a time (imports and load tests);
    returns how many."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for job in records:
        _create(pipe, job)
        count += 1
        if count % chunk == 0:
            pipe.execute()
    pipe.execute()
    return count


async def aget(client: aioredis.Redis, job_id: str) -> Job | None:
    """Load a job record, or None."""
    return _from_hash(await client.hgetall(keys.job(job_id)))


def get(client: redis.Redis, job_id: str) -> Job | None:
    """Load a job record from a blocking client, or None."""
    return _from_hash(client.hgetall(keys.job(job_id)))


def state(client: redis.Redis, job_id: str) -> JobState | None:
    """Just the job's state (cheap enough to check between mini-batches)."""
    raw = client.hget(keys.job(job_id), "state")
    return JobState(keys.text(raw)) if raw is not None else None


def begin(client: redis.Redis, job_id: str, *, attempt: int) -> bool:
    """Start (or resume, on a redelivery) a stage of a job in one atomic step: it is ``running``, and its
    attempts are at least ``attempt`` (the stage's work-queue entry's attempts) more than before its
    last retry. False: it was cancelled, has ended, or is unknown — run nothing.
    """
    args: list[str | int] = [now().isoformat(), max(1, attempt)]
    return bool(_BEGIN.run(client, [keys.job(job_id)], args) == 1)


def finish(client: redis.Redis, job_id: str, state: JobState, **fields: str | int | None) -> bool:
    """End a queued or running job as ``state`` (succeeded, failed or dead) with its final fields (counts,
    version, error) in one atomic step; returns whether it ended here (False: it had ended or was cancelled).

    Raises:
        ValueError: ``state`` is not an ending.
    """
    return bool(_TRANSITION.run(client, [keys.job(job_id)], _ending_args(state, fields)) == 1)


async def afinish(client: aioredis.Redis, job_id: str, state: JobState, **fields: str | int | None) -> bool:
    """Async twin of :func:`finish`."""
    return bool(await _TRANSITION.arun(client, [keys.job(job_id)], _ending_args(state, fields)) == 1)


def cancel(client: redis.Redis, job_id: str) -> bool:
    """Cancel a queued or running job whose effect is not published yet; returns whether it was cancelled."""
    return bool(_TRANSITION.run(client, [keys.job(job_id)], _transition_args(JobState.CANCELLED, {})) == 1)


async def acancel(client: aioredis.Redis, job_id: str) -> bool:
    """Async twin of :func:`cancel`."""
    return bool(await _TRANSITION.arun(client, [keys.job(job_id)], _transition_args(JobState.CANCELLED, {})) == 1)


async def requeue(client: aioredis.Redis, job_id: str) -> bool:
    """Queue a failed, cancelled or dead job again with its progress cleared; returns whether it was requeued."""
    return bool(await _TRANSITION.arun(client, [keys.job(job_id)], _transition_args(JobState.QUEUED, {})) == 1)


def progress(client: redis.Redis, job_id: str, **counts: int) -> None:
    """Record progress counters (``embedded``, ``indexed``) of a job that still exists (not a change of state)."""
    if not client.exists(keys.job(job_id)):
        return
    client.hset(keys.job(job_id), mapping={k: str(v) for k, v in counts.items()})


class JobFilter(BaseModel):
    """Which jobs a listing or a bulk operation covers (all fields optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: JobState | None = None
    collection: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, job: Job) -> bool:
        return (
            (self.state is None or job.state is self.state)
            and (self.collection is None or job.collection == self.collection)
            and (self.priority is None or job.priority is self.priority)
            and (self.created_after is None or job.created_at > self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
        )


async def scan(
    client: aioredis.Redis,
    tenant: str,
    flt: JobFilter,
    *,
    limit: int,
    cursor: str | None = None,
    page: int = 200,
    budget: int | None = None,
) -> tuple[list[Job], str | None]:
    """A tenant's jobs matching ``flt``, newest first: up to ``limit`` and the cursor after them.

    With ``budget``, at most that many records are read: a filter few jobs match answers a short (even
    empty) page and a cursor that goes on from the last record read. Records that expired are dropped
    from the index on the way.

    Raises:
        InvalidInput: the cursor is malformed.
    """
    key = keys.tenant_jobs(tenant)
    before = float(millis(flt.created_before)) if flt.created_before is not None else None
    after = float(millis(flt.created_after)) if flt.created_after is not None else None
    out: list[Job] = []
    gone: list[str] = []
    next_cursor: str | None = None
    read = 0
    pages = paging.newest_first(client, key, cursor=cursor, max_score=before, min_score=after, page=page)
    async for rows in pages:
        async with client.pipeline(transaction=False) as pipe:
            for job_id, _ in rows:
                pipe.hgetall(keys.job(job_id))
            records = await pipe.execute()
        for (job_id, score), raw in zip(rows, records, strict=True):
            read += 1
            job = _from_hash(raw)
            if job is None:
                gone.append(job_id)
            elif flt.matches(job):
                out.append(job)
            if len(out) == limit or (budget is not None and read >= budget):
                next_cursor = paging.cursor_of(score, job_id)
                break
        if next_cursor is not None:
            break
    await pages.aclose()
    if gone:
        await client.zrem(key, *gone)
    return out, next_cursor
