"""HTTP routes of job control: jobs, dead letters and queue statistics."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.gateway.appkeys import CONTROL, REDIS, SHUTTING_DOWN
from services.gateway.http.auth import tenant_of
from services.gateway.http.bodies import read_body
from services.gateway.http.declarations import Endpoints, Scope, links_to
from services.gateway.http.problems import validation_problem
from services.gateway.http.responses import model_response
from shared import keys
from shared.api.schemas import (
    Activity,
    ActivityQuery,
    DeadLetterListQuery,
    DeadLetterPage,
    DeadLetterReplayRequest,
    JobBulkRequest,
    JobGetQuery,
    JobListQuery,
    JobPage,
    Matched,
    Queues,
)
from shared.api.webhooks import Replayed
from shared.constants import JOB_WAIT_POLL_S, LIST_SCAN_BUDGET
from shared.errors import Conflict, NotFound
from shared.records import activity, deadletters, jobs
from shared.records.apikeys import Role
from shared.records.deadletters import DeadLetter, LetterFilter
from shared.records.jobs import FINISHED, Job, JobFilter
from shared.records.ratelimits import Category

control_routes = Endpoints("jobs")
Q = TypeVar("Q", bound=BaseModel)


def _query(request: web.Request, model: type[Q]) -> Q:
    """Validated query parameters; a ValidationError becomes a 422 naming the parameters."""
    return model.model_validate(dict(request.query))


async def _job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await jobs.aget(request.app[REDIS], job_id)
    if job is None or job.tenant != tenant_of(request):
        raise NotFound(f"job {job_id!r} does not exist")
    return job


async def _letter(request: web.Request) -> DeadLetter:
    letter_id = request.match_info["letter_id"]
    letter = await deadletters.get(request.app[REDIS], tenant_of(request), letter_id)
    if letter is None:
        raise NotFound(f"dead letter {letter_id!r} does not exist")
    return letter


def _budget(limit: int) -> int:
    """Records a list request reads at most: a filter few match answers a short page and a cursor to go on."""
    return max(LIST_SCAN_BUDGET, limit)


def _page(items: list[dict[str, Any]], name: str, cursor: str | None) -> web.Response:
    return web.json_response({name: items, "next_cursor": cursor})


@control_routes.get(
    "/v1/jobs",
    role=Role.READER,
    limit=Category.READ,
    query=JobListQuery,
    responses={200: JobPage},
)
async def list_jobs(request: web.Request) -> web.Response:
    """The tenant's jobs, newest first, optionally by state and collection; cursor pagination.

    A request reads at most 2,000 jobs: where a filter matches few of them, a page may hold fewer than
    ``limit`` (even none) with a ``next_cursor`` to go on; the list ends where ``next_cursor`` is null.
    """
    try:
        q = _query(request, JobListQuery)
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    flt = JobFilter(**q.model_dump(include={"state", "collection", "priority", "created_after", "created_before"}))
    found, cursor = await jobs.scan(
        request.app[REDIS], tenant_of(request), flt, limit=q.limit, cursor=q.cursor, budget=_budget(q.limit)
    )
    return _page([j.public() for j in found], "jobs", cursor)


@control_routes.get("/v1/jobs/{job_id}", role=Role.READER, limit=Category.READ, query=JobGetQuery, responses={200: Job})
async def get_job(request: web.Request) -> web.Response:
    """A job's state and progress; with ``wait``, answers once it changes (state or progress) or the time is up."""
    try:
        q = _query(request, JobGetQuery)
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    job = await _job(request)
    if q.wait > 0 and job.state not in FINISHED:
        job = await _changed(request, job, q.wait)
    return web.json_response(job.public())


async def _changed(request: web.Request, job: Job, wait_s: float) -> Job:
    """The job once its state or progress differs from ``job``'s, or as it is after ``wait_s`` (or at shutdown).

    Reads three fields of its record every JOB_WAIT_POLL_S: a waiting client costs Redis a few cheap
    reads a second and holds no more of its rate limit than its one request.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    stopping = request.app[SHUTTING_DOWN]
    client = request.app[REDIS]
    seen = (job.state.value, str(job.embedded), str(job.indexed))
    while (left := deadline - loop.time()) > 0 and not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), min(JOB_WAIT_POLL_S, left))
        raw = await client.hmget(keys.job(job.id), ["state", "embedded", "indexed"])
        state, embedded, indexed = (keys.text(v) if v is not None else None for v in raw)
        if (state, embedded or "0", indexed or "0") != seen:
            break
    return await _job(request)


@control_routes.post(
    "/v1/jobs/{job_id}/cancel",
    role=Role.WRITER,
    limit=Category.SINGLE,
    responses={200: Job},
    links={200: links_to("get_job", "retry_job", job_id="$response.body#/id")},
)
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job (409 once it finished)."""
    return web.json_response((await request.app[CONTROL].cancel(await _job(request))).public())


@control_routes.post(
    "/v1/jobs/{job_id}/retry",
    role=Role.WRITER,
    limit=Category.SINGLE,
    responses={202: Job},
    links={202: links_to("get_job", "cancel_job", job_id="$response.body#/id")},
)
async def retry_job(request: web.Request) -> web.Response:
    """Queue a failed, cancelled or dead job again (409 otherwise)."""
    return web.json_response((await request.app[CONTROL].retry(await _job(request))).public(), status=202)


async def _bulk(request: web.Request, action: str) -> web.Response:
    body = await read_body(request, JobBulkRequest)
    flt = JobFilter(**body.model_dump(exclude_none=True, exclude={"dry_run"}))
    matched = await request.app[CONTROL].bulk(tenant_of(request), flt, action, dry_run=body.dry_run)
    return model_response(Matched(matched=matched))


@control_routes.post(
    "/v1/jobs:cancel", role=Role.WRITER, limit=Category.BULK, body=JobBulkRequest, responses={200: Matched}
)
async def cancel_jobs(request: web.Request) -> web.Response:
    """Cancel every queued or running job matching the filter (``dry_run``: only count them)."""
    return await _bulk(request, "cancel")


@control_routes.post(
    "/v1/jobs:retry", role=Role.WRITER, limit=Category.BULK, body=JobBulkRequest, responses={200: Matched}
)
async def retry_jobs(request: web.Request) -> web.Response:
    """Retry every failed, cancelled or dead job matching the filter (``dry_run``: only count them)."""
    return await _bulk(request, "retry")


@control_routes.get(
    "/v1/dead-letters",
    role=Role.READER,
    limit=Category.READ,
    query=DeadLetterListQuery,
    responses={200: DeadLetterPage},
)
async def list_dead_letters(request: web.Request) -> web.Response:
    """The tenant's dead letters, newest first; cursor pagination (a page may be short, as jobs' are)."""
    try:
        q = _query(request, DeadLetterListQuery)
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    flt = LetterFilter(queue=q.queue, collection=q.collection, job_id=q.job_id)
    found, cursor = await deadletters.scan(
        request.app[REDIS], tenant_of(request), flt, limit=q.limit, cursor=q.cursor, budget=_budget(q.limit)
    )
    return _page([letter.public() for letter in found], "dead_letters", cursor)


@control_routes.get("/v1/dead-letters/{letter_id}", role=Role.READER, limit=Category.READ, responses={200: DeadLetter})
async def get_dead_letter(request: web.Request) -> web.Response:
    """One dead letter: its error, attempts and the work it carried."""
    return web.json_response((await _letter(request)).public())


@control_routes.post(
    "/v1/dead-letters/{letter_id}/replay", role=Role.WRITER, limit=Category.SINGLE, responses={202: Replayed}
)
async def replay_dead_letter(request: web.Request) -> web.Response:
    """Queue the letter's work again; answers with what was queued (its job, or its webhook delivery)."""
    return web.json_response(await request.app[CONTROL].replay(await _letter(request)), status=202)


@control_routes.delete("/v1/dead-letters/{letter_id}", role=Role.WRITER, limit=Category.SINGLE, responses={204: None})
async def delete_dead_letter(request: web.Request) -> web.Response:
    """Discard a dead letter."""
    await deadletters.delete(request.app[REDIS], await _letter(request))
    return web.Response(status=204)


@control_routes.post(
    "/v1/dead-letters:replay",
    role=Role.WRITER,
    limit=Category.BULK,
    body=DeadLetterReplayRequest,
    responses={200: Matched},
)
async def replay_dead_letters(request: web.Request) -> web.Response:
    """Replay every dead letter matching the filter."""
    body = await read_body(request, DeadLetterReplayRequest)
    flt = LetterFilter(**body.model_dump(exclude_none=True))
    client, control, tenant = request.app[REDIS], request.app[CONTROL], tenant_of(request)
    matched = 0
    cursor: str | None = None
    while True:
        page, cursor = await deadletters.scan(client, tenant, flt, limit=500, cursor=cursor)
        for letter in page:
            try:
                await control.replay(letter)
            except Conflict:
                continue
            matched += 1
        if cursor is None:
            return model_response(Matched(matched=matched))


@control_routes.get("/v1/queues", role=Role.ADMIN, limit=Category.READ, scope=Scope.CLUSTER, responses={200: Queues})
async def queues(request: web.Request) -> web.Response:
    """Per queue: depth by priority, delayed, in flight, dead, oldest age, live workers, throughput."""
    return model_response(Queues.model_validate({"queues": await request.app[CONTROL].queues()}))


@control_routes.get(
    "/v1/activity",
    role=Role.ADMIN,
    limit=Category.READ,
    scope=Scope.CLUSTER,
    query=ActivityQuery,
    responses={200: Activity},
)
async def recent_activity(request: web.Request) -> web.Response:
    """Documents embedded and webhook attempts finished in each of the last ``minutes`` minutes (default 60)."""
    try:
        q = _query(request, ActivityQuery)
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    kinds = (activity.Activity.EMBEDDED, activity.Activity.DELIVERIES)
    first, counts = await activity.series(request.app[REDIS], kinds, q.minutes)
    return model_response(
        Activity(
            start=datetime.fromtimestamp(first * 60, UTC),
            embedded=counts[activity.Activity.EMBEDDED],
            deliveries=counts[activity.Activity.DELIVERIES],
        )
    )
