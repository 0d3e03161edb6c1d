"""Leader election, fencing and firing against a real Redis, with replicas in-process and a test clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from services.scheduler import firing
from services.scheduler.firing import Recorded
from services.scheduler.leader import NotLeader, Scheduler
from services.scheduler.lease import Lease
from shared import keys
from shared.config import Settings
from shared.messaging.events import ScheduleFired
from shared.messaging.tasks import MAINTENANCE_QUEUE
from shared.records import schedule_state
from shared.records.schedule_state import Outcome
from shared.records.schedules import Action, MissedRuns, Schedule
from shared.runtime.broker import build_broker
from tests.streams import events_of

T0 = datetime(2026, 1, 5, 7, 59, 30, tzinfo=UTC)


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


Factory = Callable[..., Scheduler]


@pytest.fixture
def replicas(aclient: aioredis.Redis, settings: Settings) -> Any:
    """Build scheduler replicas sharing one Redis and broker (a factory)."""
    broker = build_broker(settings, settings.require_redis_url())

    def create(schedules: dict[str, Schedule], clock: Clock, *, ttl_s: float = 30.0, owner: str = "") -> Scheduler:
        return Scheduler(
            aclient, broker, schedules, lease_ttl_s=ttl_s, poll_s=0.1, stream_maxlen=1000, clock=clock,
            owner=owner or None,
        )  # fmt: skip

    yield create
    broker.close()


def _schedule(
    name: str, cron: str, action: Action = Action.EVENT, missed: MissedRuns = MissedRuns.RUN_ONCE
) -> Schedule:
    return Schedule(name=name, cron=cron, action=action, missed=missed)


def _fired(client: redis.Redis) -> list[ScheduleFired]:
    return events_of(client, ScheduleFired)


async def test_only_one_replica_holds_the_lease_and_tokens_only_grow(aclient: aioredis.Redis) -> None:
    a, b = Lease(aclient, 0.3, owner="a"), Lease(aclient, 0.3, owner="b")
    first = await a.acquire()
    assert first is not None and await b.acquire() is None
    assert await a.renew()
    await asyncio.sleep(0.5)  # a stops renewing: its lease expires
    second = await b.acquire()
    assert second is not None and second > first
    assert not await a.renew() and not a.held  # a learns it was deposed
    await b.release()
    third = await a.acquire()
    assert third is not None and third > second


async def test_a_deposed_leader_cannot_fire_and_a_tick_fires_once(
    aclient: aioredis.Redis, redis_client: redis.Redis
) -> None:
    schedule = _schedule("tick", "* * * * *")
    old, new = Lease(aclient, 0.2, owner="old"), Lease(aclient, 30, owner="new")
    assert await old.acquire() is not None
    await asyncio.sleep(0.4)
    assert await new.acquire() is not None
    tick = T0.replace(second=0)

    async def fire(lease: Lease) -> Recorded:
        return await firing.record(aclient, lease, schedule, "fire", tick, tick, fired_at=T0, run="r1")

    assert await fire(old) is Recorded.STALE_TOKEN  # the old leader still believes it leads: refused
    assert await fire(new) is Recorded.FIRED
    assert await fire(new) is Recorded.ALREADY_HANDLED
    assert redis_client.hget(keys.schedule("tick"), "token") == str(new.token).encode()


async def test_the_leader_fires_each_tick_once_and_enqueues_its_action(
    replicas: Factory, redis_client: redis.Redis
) -> None:
    clock = Clock(T0)
    schedules = {"stats": _schedule("stats", "* * * * *", Action.STATS, MissedRuns.SKIP)}
    leader, follower = replicas(schedules, clock, owner="L"), replicas(schedules, clock, owner="F")
    assert await leader.try_to_lead() and not await follower.try_to_lead()
    for _ in range(3):  # 07:59:30 .. 08:02:30, three minute ticks
        clock.advance(60)
        await leader.step()
        await leader.step()  # a second pass at the same time fires nothing more
    fired = _fired(redis_client)
    assert [f.scheduled_for.strftime("%H:%M:%S") for f in fired] == ["08:00:00", "08:01:00", "08:02:00"]
    assert not any(f.catch_up or f.manual for f in fired)
    assert redis_client.llen(keys.dramatiq_queues(MAINTENANCE_QUEUE)[0]) == 3
    state = schedule_state.view(schedules["stats"], redis_client.hgetall(keys.schedule("stats")), clock())
    assert state.last_run is not None and state.last_run.outcome is Outcome.ENQUEUED
    assert state.last_run.run_id == "tick-20260105T080200Z"
    assert state.next_run == datetime(2026, 1, 5, 8, 3, tzinfo=UTC)


async def test_failover_fires_the_missed_tick_once_under_run_once(replicas: Factory, redis_client: redis.Redis) -> None:
    clock = Clock(T0)
    schedules = {
        "hourly": _schedule("hourly", "0 * * * *"),
        "sweep": _schedule("sweep", "0 * * * *", missed=MissedRuns.SKIP),
    }
    first = replicas(schedules, clock, ttl_s=0.3, owner="first")
    assert await first.try_to_lead()
    clock.advance(60)  # 08:00:30
    await first.step()
    # The leader freezes (no more renewals): its lease runs out while the 09:00 and 10:00 ticks pass.
    await first._stop_renewing()
    await asyncio.sleep(0.5)
    clock.advance(2 * 3600 + 60)  # 10:01:30
    second = replicas(schedules, clock, owner="second")
    assert await second.try_to_lead()
    await second.step()
    await second.step()
    fired = [(f.schedule, f.scheduled_for.hour, f.catch_up) for f in _fired(redis_client)]
    assert sorted(fired) == sorted([("hourly", 8, False), ("sweep", 8, False), ("hourly", 10, True)])
    # The old leader wakes up and tries its next tick: refused by the fencing token.
    clock.advance(3600)
    with pytest.raises(NotLeader):
        await first.step()
    assert len(_fired(redis_client)) == 3


async def test_manual_triggers_fire_once_even_when_paused_and_paused_ticks_pass(
    replicas: Factory, redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    clock = Clock(T0)
    schedules = {"cleanup": _schedule("cleanup", "* * * * *", Action.CLEANUP)}
    leader = replicas(schedules, clock)
    assert await leader.try_to_lead()
    await leader.step()
    await schedule_state.set_paused(aclient, "cleanup", True)
    clock.advance(120)
    await leader.step()
    assert _fired(redis_client) == []  # two ticks passed while paused
    await schedule_state.request_trigger(aclient, "cleanup", clock())
    await leader.step()
    await leader.step()
    fired = _fired(redis_client)
    assert [(f.schedule, f.manual) for f in fired] == [("cleanup", True)]
    await schedule_state.set_paused(aclient, "cleanup", False)
    clock.advance(60)
    await leader.step()
    assert [f.manual for f in _fired(redis_client)] == [True, False]  # resumed: no catch-up of paused ticks


async def test_an_actor_reports_the_outcome_of_the_run_it_belongs_to(
    replicas: Factory, redis_client: redis.Redis
) -> None:
    clock = Clock(T0)
    schedules = {"stats": _schedule("stats", "* * * * *", Action.STATS)}
    leader = replicas(schedules, clock)
    assert await leader.try_to_lead()
    clock.advance(60)
    await leader.step()
    run_id = redis_client.hget(keys.schedule("stats"), "run_id")
    assert run_id is not None
    assert schedule_state.report(redis_client, "stats", keys.text(run_id), Outcome.SUCCEEDED, "3 collections")
    assert not schedule_state.report(redis_client, "stats", "tick-older", Outcome.FAILED, "late")
    view = schedule_state.view(schedules["stats"], redis_client.hgetall(keys.schedule("stats")), clock())
    assert view.last_run is not None
    assert (view.last_run.outcome, view.last_run.detail) == (Outcome.SUCCEEDED, "3 collections")
    assert view.last_run.finished_at is not None
