"""Job records: what a client polls to learn whether its write is searchable yet."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from shared import keys
from shared.constants import JOB_RETENTION_S

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class JobState(StrEnum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobKind(StrEnum):
    """What a job does."""

    INGEST = "ingest"
    DELETE = "delete"


FINISHED: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED})


class Job(BaseModel):
    """A job record as stored and as answered by ``GET /v1/jobs/{id}``."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    collection: str
    kind: JobKind
    state: JobState
    documents: int
    batch_id: str | None = None
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    index_version: str | None = None


def new_job_id() -> str:
    """A random, URL-safe job id."""
    return "job_" + uuid.uuid4().hex


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def _to_hash(job: Job) -> dict[str, str]:
    return {k: v for k, v in job.model_dump(mode="json").items() if v is not None}


def _from_hash(raw: Mapping[bytes | str, bytes | str]) -> Job | None:
    if not raw:
        return None
    return Job.model_validate({keys.text(k): keys.text(v) for k, v in raw.items()})


# Moves a job to a new state only from an allowed one, so a late or duplicate message can never
# move a finished job backwards. ARGV: new state, allowed-from states (comma list), then field pairs.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local allowed = ',' .. ARGV[2] .. ','
if not string.find(allowed, ',' .. state .. ',', 1, true) then return -1 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
return 1
"""

_ALLOWED_FROM: Final[dict[JobState, tuple[JobState, ...]]] = {
    JobState.RUNNING: (JobState.QUEUED, JobState.RUNNING),
    JobState.SUCCEEDED: (JobState.QUEUED, JobState.RUNNING),
    JobState.FAILED: (JobState.QUEUED, JobState.RUNNING),
}


async def create(client: aioredis.Redis, job: Job) -> None:
    """Store a new job record."""
    await client.hset(keys.job(job.id), mapping=_to_hash(job))  # type: ignore[arg-type]


async def get(client: aioredis.Redis, job_id: str) -> Job | None:
    """Load a job record, or None."""
    return _from_hash(await client.hgetall(keys.job(job_id)))


def get_sync(client: redis.Redis, job_id: str) -> Job | None:
    """Load a job record from a blocking client, or None."""
    return _from_hash(client.hgetall(keys.job(job_id)))


def _transition_args(state: JobState, fields: dict[str, str | int | None]) -> list[str]:
    args = [state.value, ",".join(_ALLOWED_FROM[state]), str(JOB_RETENTION_S) if state in FINISHED else ""]
    args += ["updated_at", now().isoformat()]
    for name, value in fields.items():
        if value is not None:
            args += [name, str(value)]
    return args


def transition(client: redis.Redis, job_id: str, state: JobState, **fields: str | int | None) -> bool:
    """Move a job to ``state`` if its current state allows it; returns whether it moved."""
    return bool(client.eval(_TRANSITION, 1, keys.job(job_id), *_transition_args(state, fields)) == 1)


async def atransition(client: aioredis.Redis, job_id: str, state: JobState, **fields: str | int | None) -> bool:
    """Async twin of :func:`transition`."""
    moved = await client.eval(_TRANSITION, 1, keys.job(job_id), *_transition_args(state, fields))
    return bool(moved == 1)
