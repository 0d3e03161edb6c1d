"""The state of each schedule in Redis: its last run and outcome, whether it is paused, manual triggers.

The scheduler leader writes a run when it fires (see ``services/scheduler/firing.py``); the worker
that runs the task the run enqueued reports how it goes (:class:`shared.runtime.schedule_runs.ScheduleRuns`)
with :func:`report`, which only touches the record while it still describes that run, so a slow run
never overwrites the outcome of a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict

from shared import clock, keys, scripts

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from shared.records.schedules import Schedule


class Outcome(StrEnum):
    """How a run is going (``enqueued`` until its task starts, and for actions that enqueue nothing)."""

    ENQUEUED = "enqueued"
    RUNNING = "running"
    RETRYING = "retrying"  # the task failed and Dramatiq's retry is pending
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class LastRun(BaseModel):
    """A schedule's most recent firing."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    scheduled_for: datetime
    fired_at: datetime
    fencing_token: int
    catch_up: bool
    manual: bool
    outcome: Outcome
    detail: str | None = None
    finished_at: datetime | None = None


class ScheduleView(BaseModel):
    """A schedule as ``GET /v1/schedules`` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    cron: str
    timezone: str
    action: str
    missed: str
    enabled: bool
    paused: bool
    next_run: datetime | None
    last_run: LastRun | None


def _last_run(fields: Mapping[str, str]) -> LastRun | None:
    if "run_id" not in fields:
        return None
    return LastRun(
        run_id=fields["run_id"],
        scheduled_for=clock.from_millis(fields["scheduled_for"]),
        fired_at=clock.from_millis(fields["fired_at"]),
        fencing_token=int(fields["token"]),
        catch_up=fields.get("catch_up") == "1",
        manual=fields.get("manual") == "1",
        outcome=Outcome(fields.get("outcome", Outcome.ENQUEUED)),
        detail=fields.get("detail") or None,
        finished_at=clock.from_millis(fields["finished_at"]) if fields.get("finished_at") else None,
    )


def view(schedule: Schedule, raw: Mapping[Any, Any], now: datetime) -> ScheduleView:
    """Combine a schedule's definition with its stored state (``raw``: its hash as read from Redis)."""
    fields = {keys.text(k): keys.text(v) for k, v in raw.items()}
    return ScheduleView(
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        action=schedule.action.value,
        missed=schedule.missed.value,
        enabled=schedule.enabled,
        paused=fields.get("paused") == "1",
        next_run=schedule.clock().next_after(now) if schedule.enabled else None,
        last_run=_last_run(fields),
    )


async def views(client: aioredis.Redis, schedules: Mapping[str, Schedule], now: datetime) -> list[ScheduleView]:
    """Every schedule with its state, by name."""
    names = sorted(schedules)
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.schedule(name))
        raws = await pipe.execute()
    return [view(schedules[n], raw, now) for n, raw in zip(names, raws, strict=True)]


async def set_paused(client: aioredis.Redis, name: str, paused: bool) -> None:
    """Pause a schedule (the leader lets its ticks pass without firing) or resume it."""
    if paused:
        await client.hset(keys.schedule(name), "paused", "1")
    else:
        await client.hdel(keys.schedule(name), "paused")


async def request_trigger(client: aioredis.Redis, name: str, at: datetime) -> None:
    """Ask the leader to fire ``name`` now, once (outside its cron ticks)."""
    await client.rpush(keys.schedule_triggers(), f"{name} {clock.millis(at)}")


# Records how a run is going unless a newer run was fired: 1 recorded, 0 not the current run.
_REPORT: Final = scripts.get("schedule_report")


def _report_args(schedule: str, run_id: str, outcome: Outcome, detail: str) -> tuple[list[str], list[str]]:
    finished = str(clock.now_ms()) if outcome in (Outcome.SUCCEEDED, Outcome.FAILED) else ""
    return [keys.schedule(schedule)], [run_id, outcome.value, detail[:2000], finished]


def report(client: redis.Redis, schedule: str, run_id: str, outcome: Outcome, detail: str = "") -> bool:
    """Record how run ``run_id`` of ``schedule`` is going; ignored once a newer run was fired."""
    return bool(_REPORT.run(client, *_report_args(schedule, run_id, outcome, detail)) == 1)


async def areport(client: aioredis.Redis, schedule: str, run_id: str, outcome: Outcome, detail: str = "") -> bool:
    """Async twin of :func:`report`."""
    return bool(await _REPORT.arun(client, *_report_args(schedule, run_id, outcome, detail)) == 1)
