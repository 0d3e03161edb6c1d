"""Firing a schedule: record the run under the fencing token, enqueue its action, announce it.

The record is one Lua script that refuses a stale token (the lease no longer holds this leader's
value) and a tick at or before the schedule's cursor (already fired or let pass), so two leaders
can never both fire a tick and a deposed leader's late write changes nothing. Only after the record
is the action enqueued: a tick fires at most once; a crash between the two loses that one run,
which the log shows.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

import structlog

from shared import keys, scripts
from shared.clock import from_millis, millis
from shared.messaging import bus, tasks
from shared.messaging.events import CloudEvent, ScheduleFired
from shared.records.schedule_state import Outcome, areport
from shared.records.schedules import Action

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

    from services.scheduler.lease import Lease
    from shared.records.schedules import Schedule

log = structlog.get_logger(__name__)
SOURCE = "semaflow/scheduler"

# Records a run under the fencing token; answers a :class:`Recorded`.
_RECORD: Final = scripts.get("scheduler_record")


class Recorded(IntEnum):
    """What the record script answered."""

    STALE_TOKEN = -1
    ALREADY_HANDLED = 0
    FIRED = 1
    PASSED = 2


@dataclass(frozen=True)
class Run:
    """One firing of a schedule."""

    schedule: Schedule
    scheduled_for: datetime
    fired_at: datetime
    token: int
    run_id: str
    catch_up: bool = False
    manual: bool = False


def run_id(scheduled_for: datetime, *, manual: bool) -> str:
    """An id naming a run: the tick it fired for, or a unique one for a manual trigger."""
    stamp = scheduled_for.strftime("%Y%m%dT%H%M%SZ")
    return f"manual-{stamp}-{uuid.uuid4().hex[:8]}" if manual else f"tick-{stamp}"


async def record(
    client: aioredis.Redis,
    lease: Lease,
    schedule: Schedule,
    mode: str,
    tick: datetime,
    cursor: datetime,
    *,
    fired_at: datetime,
    run: str = "",
    catch_up: bool = False,
) -> Recorded:
    """Run the record script for one schedule (see the module docstring)."""
    answer = await _RECORD.arun(
        client,
        [keys.scheduler_lease(), keys.schedule(schedule.name)],
        [
            lease.value,
            mode,
            millis(tick),
            millis(cursor),
            run,
            millis(fired_at),
            lease.token or 0,
            "1" if catch_up else "0",
        ],
    )
    return Recorded(int(answer))


# The maintenance task each action enqueues (``event`` only emits ``schedule.fired``).
_ACTIONS: Final[dict[Action, tasks.TaskSpec[Any]]] = {
    Action.COMPACT: tasks.COMPACT_COLLECTIONS,
    Action.CLEANUP: tasks.CLEANUP_STORE,
    Action.STATS: tasks.REFRESH_STATS,
    Action.SWEEP_DELIVERIES: tasks.SWEEP_DELIVERIES,
    Action.DIGEST: tasks.SEND_DIGEST,
}


def enqueue(broker: dramatiq.Broker, schedule: Schedule, run: str) -> None:
    """Send the schedule's action to the service that owns it (blocking)."""
    spec = _ACTIONS.get(schedule.action)
    if spec is not None:
        spec.send(broker, spec.payload(schedule=schedule.name, run_id=run))


async def dispatch(client: aioredis.Redis, broker: dramatiq.Broker, run: Run, *, stream_maxlen: int) -> None:
    """Enqueue a recorded run's action and emit ``schedule.fired``; a failed enqueue is the run's outcome."""
    try:
        await asyncio.to_thread(enqueue, broker, run.schedule, run.run_id)
    except Exception as exc:
        log.error("schedule.enqueue_failed", schedule=run.schedule.name, run_id=run.run_id, error=str(exc))
        await areport(client, run.schedule.name, run.run_id, Outcome.FAILED, f"enqueue failed: {exc}")
        return
    event = ScheduleFired(
        schedule=run.schedule.name,
        scheduled_for=run.scheduled_for,
        fired_at=run.fired_at,
        fencing_token=run.token,
        catch_up=run.catch_up,
        manual=run.manual,
        action=run.schedule.action.value,
        run_id=run.run_id,
    )
    await bus.apublish(client, CloudEvent.wrap(event, source=SOURCE, subject=run.schedule.name), maxlen=stream_maxlen)
    log.info(
        "schedule.fired",
        schedule=run.schedule.name,
        scheduled_for=run.scheduled_for.isoformat(),
        token=run.token,
        catch_up=run.catch_up,
        manual=run.manual,
        run_id=run.run_id,
    )


def cursor_of(raw: bytes | str | None) -> datetime | None:
    """A stored cursor (epoch ms) as an instant."""
    return from_millis(raw) if raw else None
