"""Schedules: what fires when (cron in a time zone), what it does, and the rule for runs missed in downtime.

A schedule is declared in settings (``SEMAFLOW_SCHEDULES``, JSON keyed by name) on top of the
defaults below. Cron expressions have five fields, or six with seconds last (croniter's format),
and are evaluated in the schedule's time zone, DST included:

- a wall time that does not exist (the hour skipped in spring) fires at the first instant after it;
- a wall time that happens twice (the hour repeated in autumn) fires once for a schedule with a
  fixed hour, and in both hours for one whose hour field is a wildcard (``0 * * * *`` fires every
  real hour), as Vixie cron does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, field_validator

from shared.constants import SCHEDULE_NAME_PATTERN
from shared.errors import ConfigurationError

_NAME = re.compile(SCHEDULE_NAME_PATTERN)


class Action(StrEnum):
    """What a firing does besides emitting ``schedule.fired``."""

    COMPACT = "compact"  # indexer: compact_collections
    CLEANUP = "cleanup"  # indexer: cleanup_store
    STATS = "stats"  # indexer: refresh_stats
    SWEEP_DELIVERIES = "sweep_deliveries"  # notifier: sweep_deliveries
    DIGEST = "digest"  # notifier: send_digest (every tenant, the last ISO week)
    EVENT = "event"  # nothing else: subscribers react to the event


class MissedRuns(StrEnum):
    """What a scheduler that takes office does about ticks that passed while none was leading."""

    SKIP = "skip"  # fire none of them
    RUN_ONCE = "run_once"  # fire the latest of them, once


class ScheduleConfig(BaseModel):
    """A schedule as settings declare it: every field optional, so an entry can override a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: str | None = None
    timezone: str | None = None
    action: Action | None = None
    missed: MissedRuns | None = None
    enabled: bool | None = None


class Schedule(BaseModel):
    """A complete, validated schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cron: str
    timezone: str = "UTC"
    action: Action
    missed: MissedRuns
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"schedule name must match {SCHEDULE_NAME_PATTERN}")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (five fields, or six with seconds last)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def clock(self) -> Cron:
        """The schedule's cron expression bound to its time zone."""
        return Cron(self.cron, ZoneInfo(self.timezone))


# The defaults: compaction hourly, cleanup hourly at half past, statistics every 5 minutes,
# webhook retry sweep every minute, the weekly digest on Monday at 08:00. A missed compaction,
# cleanup or digest still runs once after downtime; missed statistics and sweeps are simply
# superseded by the next tick, a minute or five later.
DEFAULTS: Final[tuple[tuple[str, str, Action, MissedRuns], ...]] = (
    ("compaction", "0 * * * *", Action.COMPACT, MissedRuns.RUN_ONCE),
    ("cleanup", "30 * * * *", Action.CLEANUP, MissedRuns.RUN_ONCE),
    ("stats", "*/5 * * * *", Action.STATS, MissedRuns.SKIP),
    ("delivery-sweep", "* * * * *", Action.SWEEP_DELIVERIES, MissedRuns.SKIP),
    ("digest", "0 8 * * 1", Action.DIGEST, MissedRuns.RUN_ONCE),
)


def configured(overrides: Mapping[str, ScheduleConfig], timezone: str) -> dict[str, Schedule]:
    """The defaults with ``overrides`` applied (by name; new names need a cron and an action), by name.

    Raises:
        ConfigurationError: a schedule is incomplete, or its name, cron or time zone is invalid.
    """
    merged: dict[str, dict[str, object]] = {
        name: {"name": name, "cron": cron, "timezone": timezone, "action": action, "missed": missed}
        for name, cron, action, missed in DEFAULTS
    }
    for name, override in overrides.items():
        fields = merged.setdefault(name, {"name": name, "timezone": timezone, "missed": MissedRuns.SKIP})
        fields.update(override.model_dump(exclude_none=True))
    out: dict[str, Schedule] = {}
    for name, fields in merged.items():
        try:
            out[name] = Schedule.model_validate(fields)
        except ValueError as exc:
            raise ConfigurationError(f"schedule {name!r}: {exc}") from exc
    return out


class Cron:
    """Ticks of a cron expression in a time zone, as UTC instants (see the module docstring for DST)."""

    def __init__(self, expr: str, tz: ZoneInfo) -> None:
        self.expr = expr
        self.tz = tz
        hour = expr.split()[1]
        self._fixed_hour = not hour.startswith("*")

    def _wanted(self, tick: datetime) -> bool:
        """False for the second occurrence of a repeated wall time, when the hour is fixed."""
        if not self._fixed_hour:
            return True
        naive = tick.replace(tzinfo=None)
        first = naive.replace(fold=0, tzinfo=self.tz).utcoffset()
        second = naive.replace(fold=1, tzinfo=self.tz).utcoffset()
        return first == second or tick.utcoffset() != second

    def after(self, start: datetime) -> Iterator[datetime]:
        """Every tick strictly after ``start``, in order (endless)."""
        it = croniter(self.expr, start.astimezone(self.tz))
        while True:
            tick: datetime = it.get_next(datetime)
            if self._wanted(tick):
                yield tick.astimezone(UTC)

    def next_after(self, start: datetime) -> datetime:
        """The first tick strictly after ``start``."""
        return next(self.after(start))

    def latest_at_or_before(self, at: datetime) -> datetime:
        """The last tick at or before ``at``."""
        base = at.astimezone(self.tz) + timedelta(microseconds=1)
        it = croniter(self.expr, base)
        tick: datetime = it.get_prev(datetime)
        while not self._wanted(tick):
            tick = it.get_prev(datetime)
        # croniter's backwards steps are trusted for a starting point only: walk forwards to be exact.
        latest = tick.astimezone(UTC)
        for later in self.after(latest):
            if later > at:
                return latest
            latest = later
        raise AssertionError("unreachable: cron ticks are endless")
