"""Time as semaflow stores and shows it: UTC datetimes, epoch milliseconds in Redis, ISO 8601 in the API."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def now_ms() -> int:
    """The current time in epoch milliseconds (what Redis scores and records hold)."""
    return time.time_ns() // 1_000_000


def millis(at: datetime) -> int:
    """Epoch milliseconds of ``at``."""
    return int(at.timestamp() * 1000)


def from_millis(ms: int | str | bytes) -> datetime:
    """The UTC instant of epoch milliseconds (as Redis returns them: a number, text or bytes)."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def iso_time(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC time, for the API (None stays None)."""
    return from_millis(ms).isoformat() if ms is not None else None
