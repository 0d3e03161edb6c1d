"""Schedules: defaults and overrides from settings, cron ticks in a time zone across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.config import Settings
from shared.errors import ConfigurationError
from shared.records.schedules import Action, Cron, MissedRuns, ScheduleConfig, configured

BERLIN = ZoneInfo("Europe/Berlin")


def test_defaults_are_the_documented_ones() -> None:
    table = configured({}, "UTC")
    assert {n: (s.cron, s.action, s.missed) for n, s in table.items()} == {
        "compaction": ("0 * * * *", Action.COMPACT, MissedRuns.RUN_ONCE),
        "cleanup": ("30 * * * *", Action.CLEANUP, MissedRuns.RUN_ONCE),
        "stats": ("*/5 * * * *", Action.STATS, MissedRuns.SKIP),
        "delivery-sweep": ("* * * * *", Action.SWEEP_DELIVERIES, MissedRuns.SKIP),
        "digest": ("0 8 * * 1", Action.DIGEST, MissedRuns.RUN_ONCE),
    }


def test_settings_override_defaults_and_add_schedules_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SEMAFLOW_SCHEDULES",
        '{"digest": {"enabled": false, "timezone": "Europe/Berlin"},'
        ' "tick": {"cron": "* * * * * */2", "action": "event"}}',
    )
    table = Settings(schedule_timezone="America/New_York").schedule_table()
    assert not table["digest"].enabled and table["digest"].timezone == "Europe/Berlin"
    assert table["cleanup"].timezone == "America/New_York"
    assert table["tick"].action is Action.EVENT and table["tick"].missed is MissedRuns.SKIP


@pytest.mark.parametrize(
    "override",
    [
        ScheduleConfig(cron="61 * * * *"),
        ScheduleConfig(cron="* * *"),
        ScheduleConfig(timezone="Mars/Olympus"),
    ],
)
def test_invalid_schedules_are_refused(override: ScheduleConfig) -> None:
    with pytest.raises(ConfigurationError):
        configured({"stats": override}, "UTC")


def test_a_new_schedule_needs_a_cron_and_an_action() -> None:
    with pytest.raises(ConfigurationError):
        configured({"mine": ScheduleConfig(cron="* * * * *")}, "UTC")
    with pytest.raises(ConfigurationError):
        configured({"Bad Name": ScheduleConfig(cron="* * * * *", action=Action.EVENT)}, "UTC")


def _local(ticks: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).isoformat() for t in ticks]


def _ticks(expr: str, start: datetime, n: int) -> list[datetime]:
    it = Cron(expr, BERLIN).after(start)
    return [next(it) for _ in range(n)]


def test_a_daily_time_in_the_repeated_autumn_hour_fires_once() -> None:
    ticks = _ticks("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), 3)
    assert _local(ticks) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]


def test_an_hourly_schedule_fires_in_both_repeated_hours() -> None:
    ticks = _ticks("0 * * * *", datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN), 3)
    assert _local(ticks) == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]
    assert ticks[1] - ticks[0] == ticks[2] - ticks[1]  # one real hour apart


def test_a_time_skipped_in_spring_fires_right_after_the_gap() -> None:
    ticks = _ticks("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2)
    assert _local(ticks) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_latest_at_or_before_includes_an_exact_tick_and_agrees_with_after() -> None:
    cron = Cron("0 8 * * 1", BERLIN)
    monday = datetime(2026, 1, 5, 8, tzinfo=BERLIN)
    assert cron.latest_at_or_before(monday) == monday.astimezone(UTC)
    assert cron.latest_at_or_before(datetime(2026, 1, 7, tzinfo=BERLIN)) == monday.astimezone(UTC)
    autumn = Cron("30 2 * * *", BERLIN)
    latest = autumn.latest_at_or_before(datetime(2026, 10, 25, 12, tzinfo=BERLIN))
    assert _local([latest]) == ["2026-10-25T02:30:00+02:00"]


def test_seconds_are_the_sixth_field() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    it = Cron("* * * * * */2", ZoneInfo("UTC")).after(start)
    assert [(next(it) - start).total_seconds() for _ in range(3)] == [2.0, 4.0, 6.0]
