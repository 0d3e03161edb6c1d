"""The scheduler loop: try to lead; while leading, fire due ticks and manual triggers; hand over on stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import structlog
from opentelemetry.trace import SpanKind

from services.scheduler import firing
from services.scheduler.firing import Recorded, Run
from services.scheduler.lease import Lease
from services.scheduler.ticks import plan
from shared import clock, keys, scripts
from shared.constants import MAX_TICKS_PER_PASS
from shared.messaging import tracing
from shared.runtime.outage import redis_outage

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

    from services.scheduler.metrics import SchedulerMetrics
    from shared.records.schedules import Cron, Schedule

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

# The cursors of schedules (false where none); one operator's trigger, popped only by the current leader.
_CURSORS: Final = scripts.get("scheduler_cursors")
_TAKE_TRIGGER: Final = scripts.get("scheduler_take_trigger")


def utcnow() -> datetime:
    """The current UTC time."""
    return clock.now()


class NotLeader(Exception):
    """Our fencing token was refused: another replica leads now."""


class Scheduler:
    """One scheduler replica: competes for the lease, and fires while it holds it."""

    def __init__(
        self,
        client: aioredis.Redis,
        broker: dramatiq.Broker,
        schedules: Mapping[str, Schedule],
        *,
        lease_ttl_s: float,
        poll_s: float,
        stream_maxlen: int,
        clock: Clock = utcnow,
        owner: str | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        if metrics is not None:
            metrics.follow_leadership(lambda: self.leading)
        self.broker = broker
        self.schedules = dict(schedules)
        self.lease = Lease(client, lease_ttl_s, owner=owner)
        self.renew_every_s = lease_ttl_s / 3
        self.poll_s = min(poll_s, self.renew_every_s)
        self.stream_maxlen = stream_maxlen
        self.clock = clock
        self.term_start: datetime | None = None
        self.cursors: dict[str, datetime | None] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._next_ticks: dict[str, tuple[tuple[str, str, datetime], datetime]] = {}

    @property
    def leading(self) -> bool:
        """Whether this replica believes it holds the lease."""
        return self.term_start is not None and self.lease.held

    async def run(self, stop: asyncio.Event) -> None:
        """Compete and fire until ``stop``; then release the lease so another replica takes over at once."""
        try:
            while not stop.is_set():
                wait_s = self.poll_s
                try:
                    if not self.leading:
                        await self.try_to_lead()
                    if self.leading:
                        wait_s = await self.step()
                except NotLeader:
                    self._step_down("fencing token refused")
                except Exception as exc:  # Redis or the broker unavailable: keep trying
                    if not redis_outage.failed(exc, loop="scheduler"):
                        log.warning("scheduler.pass_failed", error=str(exc), kind=type(exc).__name__)
                else:
                    redis_outage.recovered()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.01, wait_s))
        finally:
            await self._stop_renewing()
            if self.lease.token is not None:
                with contextlib.suppress(Exception):
                    await self.lease.release()
                log.info("scheduler.lease_released", token=self.lease.token)

    async def try_to_lead(self) -> bool:
        """Take the lease if it is free and start a term; returns whether this replica now leads."""
        if self.term_start is not None:
            self._step_down("lease expired")
        token = await self.lease.acquire()
        if token is None:
            return False
        self.term_start = self.clock()
        names = sorted(self.schedules)
        raw = await _CURSORS.arun(self.client, [keys.schedule(n) for n in names]) if names else []
        self.cursors = {n: firing.cursor_of(r) for n, r in zip(names, raw, strict=True)}
        self._renewer = asyncio.create_task(self._keep_lease(), name="scheduler-lease")
        log.info("scheduler.leading", token=token, owner=self.lease.owner, term_start=self.term_start.isoformat())
        return True

    def _step_down(self, why: str) -> None:
        if self.term_start is not None:
            log.warning("scheduler.deposed", why=why, token=self.lease.token)
        self.term_start = None
        self.lease.lost()
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    async def _keep_lease(self) -> None:
        """Renew every third of the TTL; a failed renewal ends the term (fencing protects the rest)."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                if not await self.lease.renew():
                    log.warning("scheduler.lease_lost", owner=self.lease.owner)
                    return
            except Exception as exc:
                if not redis_outage.failed(exc, loop="scheduler_lease"):
                    log.warning("scheduler.renew_failed", error=str(exc))

    async def step(self) -> float:
        """One leader pass: manual triggers, then due ticks; returns how long to wait before the next."""
        await self._triggers()
        now = self.clock()
        assert self.term_start is not None
        soonest = now + timedelta(seconds=self.poll_s)
        for name in sorted(self.schedules):
            schedule = self.schedules[name]
            if not schedule.enabled:
                continue
            cron = schedule.clock()
            upcoming = self._upcoming(name, cron)
            if upcoming is not None and upcoming > now:  # nothing due: the plan would be empty
                soonest = min(soonest, upcoming)
                continue
            todo = plan(cron, schedule.missed, self.cursors.get(name), self.term_start, now, limit=MAX_TICKS_PER_PASS)
            for due in todo.due:
                await self._fire(schedule, due.tick, due.cursor, catch_up=due.catch_up)
            if todo.advance_to is not None:
                await self._record(schedule, "advance", todo.advance_to, todo.advance_to)
            cursor = self.cursors.get(name) or now
            soonest = min(soonest, cron.next_after(max(cursor, now - timedelta(seconds=1))))
        return max(0.0, (soonest - self.clock()).total_seconds())

    def _upcoming(self, name: str, cron: Cron) -> datetime | None:
        """The first tick after the schedule's cursor, once the cursor is within this term (None before: the
        plan decides what was missed). Kept while the cursor and the expression stay as they are, so a pass with
        nothing due costs no cron arithmetic (a pass runs every ``poll_s``)."""
        cursor = self.cursors.get(name)
        assert self.term_start is not None
        if cursor is None or cursor < self.term_start:
            return None
        key = (cron.expr, cron.tz.key, cursor)
        known = self._next_ticks.get(name)
        if known is None or known[0] != key:
            known = self._next_ticks[name] = (key, cron.next_after(cursor))
        return known[1]

    async def _record(
        self, schedule: Schedule, mode: str, tick: datetime, cursor: datetime, *, run: str = "", catch_up: bool = False
    ) -> Recorded:
        fired_at = self.clock()
        answer = await firing.record(
            self.client, self.lease, schedule, mode, tick, cursor, fired_at=fired_at, run=run, catch_up=catch_up
        )
        if answer is Recorded.STALE_TOKEN:
            raise NotLeader(schedule.name)
        if answer is Recorded.ALREADY_HANDLED:
            # Someone handled it first: only possible with a stale view of the cursor; reload it.
            raw = await self.client.hget(keys.schedule(schedule.name), "cursor")
            self.cursors[schedule.name] = firing.cursor_of(raw)
            log.warning("schedule.tick_already_handled", schedule=schedule.name, tick=tick.isoformat())
        elif mode != "manual":
            self.cursors[schedule.name] = max(cursor, self.cursors.get(schedule.name) or cursor)
        return answer

    async def _fire(self, schedule: Schedule, tick: datetime, cursor: datetime, *, catch_up: bool) -> None:
        run_id = firing.run_id(tick, manual=False)
        fired_at = self.clock()
        answer = await self._record(schedule, "fire", tick, cursor, run=run_id, catch_up=catch_up)
        if answer is Recorded.FIRED:
            run = Run(schedule, tick, fired_at, self.lease.token or 0, run_id, catch_up=catch_up)
            await self._dispatch(run)
        elif answer is Recorded.PASSED:
            log.info("schedule.paused_tick", schedule=schedule.name, tick=tick.isoformat())

    async def _triggers(self) -> None:
        """Fire what operators asked for, once each (taken from the list only by the current leader)."""
        while True:
            lease_keys = [keys.scheduler_lease(), keys.schedule_triggers()]
            raw = await _TAKE_TRIGGER.arun(self.client, lease_keys, [self.lease.value])
            if raw is None:
                return
            if raw == -1:
                raise NotLeader("trigger")
            name, _, requested = keys.text(raw).partition(" ")
            schedule = self.schedules.get(name)
            if schedule is None:
                log.warning("schedule.unknown_trigger", schedule=name)
                continue
            requested_at = clock.from_millis(requested) if requested else self.clock()
            run_id = firing.run_id(requested_at, manual=True)
            fired_at = self.clock()
            if await self._record(schedule, "manual", requested_at, requested_at, run=run_id) is Recorded.FIRED:
                run = Run(schedule, requested_at, fired_at, self.lease.token or 0, run_id, manual=True)
                await self._dispatch(run)

    async def _dispatch(self, run: Run) -> None:
        """Enqueue a recorded run's action, in a trace of its own that its action's work continues."""
        if self.metrics is not None:
            self.metrics.firings.labels(schedule=run.schedule.name).inc()
        attributes = {"semaflow.schedule": run.schedule.name, "semaflow.run_id": run.run_id}
        with tracing.span(f"schedule.fire {run.schedule.name}", kind=SpanKind.PRODUCER, attributes=attributes):
            await firing.dispatch(self.client, self.broker, run, stream_maxlen=self.stream_maxlen)
