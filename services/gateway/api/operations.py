"""HTTP routes of operations: schedules (list, trigger, pause, resume) and collection rollback.

Operator routes: declared for admin keys only (the role check answers 403 otherwise). Schedules
are cluster-wide; a rollback reaches the key's own tenant's collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from services.gateway.appkeys import METRICS, REDIS, SETTINGS, STORE, WRITES
from services.gateway.http.auth import collection_of
from services.gateway.http.bodies import read_body
from services.gateway.http.declarations import Endpoints, Scope, links_to
from services.gateway.http.responses import model_response
from services.gateway.search.indexmetrics import exported
from shared import clock, keys
from shared.api.schemas import RollbackAccepted, RollbackRequest, ScheduleList, TriggerAccepted
from shared.errors import Conflict, CorruptObject, NotFound, ObjectNotFound
from shared.index import manifests
from shared.records import catalog, schedule_state
from shared.records.apikeys import Role
from shared.records.ratelimits import Category
from shared.records.schedule_state import ScheduleView
from shared.records.schedules import Schedule

maintenance_routes = Endpoints("maintenance")
SCHEDULES: Final = web.AppKey("schedules", dict[str, Schedule])


def _schedule(request: web.Request) -> Schedule:
    name = request.match_info["schedule"]
    found = request.app[SCHEDULES].get(name)
    if found is None:
        raise NotFound(f"schedule {name!r} does not exist")
    return found


async def _view(request: web.Request, schedule: Schedule) -> web.Response:
    raw = await request.app[REDIS].hgetall(keys.schedule(schedule.name))
    return model_response(schedule_state.view(schedule, raw, clock.now()))


@maintenance_routes.get(
    "/v1/schedules",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    responses={200: ScheduleList},
    links={
        200: links_to(
            "trigger_schedule", "pause_schedule", "resume_schedule", schedule="$response.body#/schedules/0/name"
        )
    },
)
async def list_schedules(request: web.Request) -> web.Response:
    """Every schedule: cron, time zone, next run, last run and its outcome, paused."""
    schedules: dict[str, Schedule] = request.app[SCHEDULES]
    found = await schedule_state.views(request.app[REDIS], schedules, clock.now())
    return model_response(ScheduleList(schedules=found))


@maintenance_routes.post(
    "/v1/schedules/{schedule}/trigger",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    responses={202: TriggerAccepted},
)
async def trigger_schedule(request: web.Request) -> web.Response:
    """Ask the leading scheduler to fire the schedule now, once (paused or not)."""
    schedule = _schedule(request)
    at = clock.now()
    await schedule_state.request_trigger(request.app[REDIS], schedule.name, at)
    return model_response(TriggerAccepted(schedule=schedule.name, requested_at=at), 202)


@maintenance_routes.post(
    "/v1/schedules/{schedule}/pause",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    responses={200: ScheduleView},
)
async def pause_schedule(request: web.Request) -> web.Response:
    """Let the schedule's ticks pass without firing until it is resumed."""
    schedule = _schedule(request)
    await schedule_state.set_paused(request.app[REDIS], schedule.name, True)
    return await _view(request, schedule)


@maintenance_routes.post(
    "/v1/schedules/{schedule}/resume",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    responses={200: ScheduleView},
)
async def resume_schedule(request: web.Request) -> web.Response:
    """Fire the schedule's ticks again (those that passed while paused are not caught up)."""
    schedule = _schedule(request)
    await schedule_state.set_paused(request.app[REDIS], schedule.name, False)
    return await _view(request, schedule)


async def _rollback_target(request: web.Request, record: catalog.Collection, version: str) -> manifests.Manifest:
    """The collection's manifest ``version``.

    Raises:
        NotFound: no such version of this collection.
        Conflict: it is live already, was removed by cleanup, belongs to another collection, or is corrupt.
    """
    client, ref = request.app[REDIS], record.ref
    live = await client.get(keys.latest(ref.tenant, ref.name))
    if live is not None and keys.text(live) == version:
        raise Conflict(f"version {version} is already the live version of {ref.name!r}")
    try:
        manifest = await asyncio.to_thread(manifests.read, request.app[STORE], ref, version)
    except ObjectNotFound:
        if await client.zscore(keys.removed_versions(ref.tenant, ref.name), version) is not None:
            raise Conflict(f"version {version} of {ref.name!r} was removed by cleanup") from None
        for other in await catalog.alist_all(client, ref.tenant):
            if other.id != ref.id and await asyncio.to_thread(
                request.app[STORE].exists, other.ref.manifest_key(version)
            ):
                raise Conflict(f"version {version} belongs to collection {other.name!r}") from None
        raise NotFound(f"collection {ref.name!r} has no version {version}") from None
    except CorruptObject as exc:
        raise Conflict(f"version {version} cannot be used: {exc}") from exc
    if (manifest.tenant, manifest.collection, manifest.collection_id) != (ref.tenant, ref.name, ref.id):
        raise Conflict(f"version {version} belongs to another collection")
    return manifest


@maintenance_routes.post(
    "/v1/collections/{name}/rollback",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    body=RollbackRequest,
    responses={202: RollbackAccepted},
    links={202: links_to("get_job", "cancel_job", "retry_job", job_id="$response.body#/job_id")},
)
async def rollback_collection(request: web.Request) -> web.Response:
    """Publish an earlier version's content as the collection's next version (202 with its job)."""
    record, _ = await collection_of(request)
    body = await read_body(request, RollbackRequest)
    target = await _rollback_target(request, record, body.version)
    job = await request.app[WRITES].rollback(record, target.version, target.documents)
    return model_response(RollbackAccepted(job_id=job.id, version=target.version), 202)


async def stats_gauges(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the index statistics gauges, exported while the app runs (after its Redis is up)."""
    async with exported(app[REDIS], app[SETTINGS].stats_refresh_s, app[METRICS].registry):
        yield


def install(app: web.Application) -> None:
    """Give the gateway app its schedule table and the statistics gauges (its routes are in ROUTE_TABLES).

    Raises:
        ConfigurationError: a schedule in the settings is invalid.
    """
    app[SCHEDULES] = app[SETTINGS].schedule_table()
    app.cleanup_ctx.append(stats_gauges)


__all__ = ["SCHEDULES", "install", "maintenance_routes"]
