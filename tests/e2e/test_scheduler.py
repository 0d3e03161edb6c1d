"""Three real scheduler processes on one Redis: every tick fires exactly once, and kill -9 of the leader
hands over to another replica, which fires the tick missed meanwhile once (``run_once``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from semaflow.redis_server import RedisServer
from shared import keys
from shared.messaging.events import ScheduleFired
from tests.streams import events_of

pytestmark = pytest.mark.e2e

REPLICAS = 3
LEASE_TTL_S = 3
TICKS_PER_PHASE = 8
DEADLINE_S = 90.0
TAKEOVER_SLACK_S = 2.0
SECOND = timedelta(seconds=1)
T = TypeVar("T")


def _env(redis_url: str) -> dict[str, str]:
    schedules: dict[str, object] = {name: {"enabled": False} for name in
                                    ("compaction", "cleanup", "stats", "delivery-sweep", "digest")}  # fmt: skip
    schedules["tick"] = {"cron": "* * * * * *", "action": "event", "missed": "run_once"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
    env.update(
        {
            "SEMAFLOW_REDIS_URL": redis_url,
            "SEMAFLOW_LOG_JSON": "true",
            "SEMAFLOW_SCHEDULER_LEASE_TTL_S": str(LEASE_TTL_S),
            "SEMAFLOW_SCHEDULER_POLL_S": "0.2",
            "SEMAFLOW_SCHEDULES": json.dumps(schedules),
        }
    )
    return env


@pytest.fixture
def schedulers(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for n in range(REPLICAS):
        with (tmp_path / f"scheduler-{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.scheduler"], env=_env(redis_server.url), stderr=log
            )
        procs[proc.pid] = proc
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _fired(client: redis.Redis) -> list[ScheduleFired]:
    return [f for f in events_of(client, ScheduleFired) if f.schedule == "tick"]


def _wait(what: str, check: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _lease(client: redis.Redis) -> tuple[int, int] | None:
    """(pid, token) of the current leader."""
    raw = client.get(keys.scheduler_lease())
    if raw is None:
        return None
    owner, token = keys.text(raw).rsplit(" ", 1)
    return int(owner.split(":")[1]), int(token)


def test_every_tick_fires_exactly_once_and_a_killed_leader_is_replaced(
    schedulers: dict[int, subprocess.Popen[bytes]], redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    # Given three replicas that have been firing a per-second schedule for a while,
    _wait("ticks from the first leader", lambda: len(_fired(client)) >= TICKS_PER_PHASE or None)
    leader_pid, old_token = _wait("a leader", lambda: _lease(client))
    assert leader_pid in schedulers

    # When the leader is killed with SIGKILL (no chance to release its lease),
    lease_left_s = max(0, int(client.pttl(keys.scheduler_lease()))) / 1000
    killed = time.monotonic()
    schedulers[leader_pid].send_signal(signal.SIGKILL)
    schedulers[leader_pid].wait(10)
    killed_at = len(_fired(client))

    # Then another replica takes over with a larger fencing token, as soon as the lease runs out,
    new_pid, _token = _wait(
        "another replica to lead", lambda: lease if (lease := _lease(client)) and lease[1] > old_token else None
    )
    takeover_s = time.monotonic() - killed
    print(f"takeover after kill -9: {takeover_s:.2f} s (the lease had {lease_left_s:.2f} s left)")
    assert new_pid != leader_pid and new_pid in schedulers
    # (what the lease had left, plus the replicas' 0.2 s poll and this loop's; slack for a busy machine)
    assert lease_left_s <= LEASE_TTL_S and takeover_s <= lease_left_s + TAKEOVER_SLACK_S, (takeover_s, lease_left_s)
    # and keeps firing.
    _wait("ticks from the new leader", lambda: len(_fired(client)) >= killed_at + TICKS_PER_PHASE or None)
    for pid, proc in schedulers.items():
        if pid != leader_pid:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0

    fired = _fired(client)
    ticks = [f.scheduled_for for f in fired]
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    terms: dict[int, list[ScheduleFired]] = defaultdict(list)
    for f in fired:
        terms[f.fencing_token].append(f)
    assert old_token in terms and max(terms) > old_token
    tokens = sorted(terms)
    ordered = [sorted(terms[token], key=lambda f: f.scheduled_for) for token in tokens]
    for term in ordered:
        # Within a term every tick fires, each once; only a term's first firing may be a catch-up.
        for before, after in pairwise(term):
            assert after.scheduled_for - before.scheduled_for == SECOND
            assert not after.catch_up
    for previous, term in pairwise(ordered):
        gap = term[0].scheduled_for - previous[-1].scheduled_for
        assert gap >= SECOND  # terms never overlap
        # Ticks missed between two terms: the latest of them fired once, as a catch-up.
        assert term[0].catch_up == (gap > SECOND)
    handover = ordered[tokens.index(old_token) + 1]
    assert handover[0].catch_up, "the tick missed during the failover did not fire"
    client.close()
