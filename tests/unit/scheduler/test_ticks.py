"""Which ticks a leader fires: every tick of its own term, and the missed-run policy for the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.scheduler.ticks import plan
from shared.records.schedules import Cron, MissedRuns

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
HOURLY = Cron("0 * * * *", ZoneInfo("UTC"))
EVERY_SECOND = Cron("* * * * * *", ZoneInfo("UTC"))


def _h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_a_first_start_misses_nothing_and_moves_the_cursor_to_its_start() -> None:
    out = plan(HOURLY, MissedRuns.RUN_ONCE, None, _h(0.5), _h(0.5), limit=100)
    assert out.due == () and out.advance_to == _h(0.5)


def test_a_leader_fires_each_tick_of_its_term_once_even_when_late() -> None:
    # Given a leader since 10:30 whose cursor is at its start,
    # When it looks again at 12:10 (it stalled across two ticks),
    out = plan(HOURLY, MissedRuns.SKIP, _h(0.5), _h(0.5), _h(2.17), limit=100)
    # Then both ticks of its term fire, on time, in order.
    assert [(d.tick, d.catch_up) for d in out.due] == [(_h(1), False), (_h(2), False)]
    assert out.advance_to is None
    again = plan(HOURLY, MissedRuns.SKIP, out.due[-1].cursor, _h(0.5), _h(2.17), limit=100)
    assert again.due == ()


def test_run_once_fires_the_latest_missed_tick_once_after_downtime() -> None:
    # The last run was the 10:00 tick; no leader from then until 13:20.
    out = plan(HOURLY, MissedRuns.RUN_ONCE, _h(0), _h(3.33), _h(3.34), limit=100)
    assert [(d.tick, d.catch_up) for d in out.due] == [(_h(3), True)]
    assert out.due[0].cursor == _h(3.33) and out.advance_to is None
    # The next pass of the same term fires nothing more until 14:00.
    assert plan(HOURLY, MissedRuns.RUN_ONCE, _h(3.33), _h(3.33), _h(3.9), limit=100).due == ()


def test_skip_fires_nothing_missed_and_moves_on() -> None:
    out = plan(HOURLY, MissedRuns.SKIP, _h(0), _h(3.33), _h(3.34), limit=100)
    assert out.due == () and out.advance_to == _h(3.33)
    later = plan(HOURLY, MissedRuns.SKIP, _h(3.33), _h(3.33), _h(4.01), limit=100)
    assert [(d.tick, d.catch_up) for d in later.due] == [(_h(4), False)]


def test_nothing_missed_when_no_tick_passed_between_the_cursor_and_the_term() -> None:
    out = plan(HOURLY, MissedRuns.RUN_ONCE, _h(1), _h(1.5), _h(1.6), limit=100)
    assert out.due == () and out.advance_to == _h(1.5)


def test_a_catch_up_is_followed_by_the_ticks_of_the_term() -> None:
    start = T0 + timedelta(seconds=10.5)
    out = plan(
        EVERY_SECOND, MissedRuns.RUN_ONCE, T0 + timedelta(seconds=5), start, start + timedelta(seconds=2), limit=100
    )
    assert [(int((d.tick - T0).total_seconds()), d.catch_up) for d in out.due] == [(10, True), (11, False), (12, False)]


def test_a_burst_after_a_long_stall_is_bounded() -> None:
    out = plan(EVERY_SECOND, MissedRuns.SKIP, T0, T0, T0 + timedelta(seconds=500), limit=100)
    assert len(out.due) == 100 and out.due[-1].tick == T0 + timedelta(seconds=500)
