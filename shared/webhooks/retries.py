"""When a failed webhook delivery is tried again: the retry schedule and ``Retry-After``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from shared import clock
from shared.constants import WEBHOOK_RETRY_AFTER_MAX_S
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.config import Settings


def parse_delays(text: str) -> tuple[float, ...]:
    """Parse an explicit schedule, ``"5, 30, 300"`` (seconds between consecutive attempts).

    Raises:
        ConfigurationError: an entry is not a non-negative number, or there is none.
    """
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"invalid webhook retry schedule {text!r}: {exc}") from exc
    if not delays or any(d < 0 for d in delays):
        raise ConfigurationError(f"invalid webhook retry schedule {text!r}: give non-negative seconds")
    return delays


@dataclass(frozen=True)
class RetrySchedule:
    """Delays between attempts: exponential with a cap (or an explicit list), shortened by random jitter.

    Jitter only ever shortens a delay (by up to ``jitter`` of it), so the cap holds, and deliveries
    that failed together (an endpoint's outage) spread out instead of retrying in lockstep.
    """

    max_attempts: int
    initial_s: float = 60.0
    multiplier: float = 2.0
    max_s: float = 1200.0
    jitter: float = 0.2
    explicit: tuple[float, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        """The schedule the settings describe."""
        explicit = parse_delays(settings.webhook_retry_schedule) if settings.webhook_retry_schedule else ()
        return cls(
            max_attempts=settings.webhook_max_attempts,
            initial_s=settings.webhook_retry_initial_s,
            multiplier=settings.webhook_retry_multiplier,
            max_s=settings.webhook_retry_max_s,
            jitter=settings.webhook_retry_jitter,
            explicit=explicit,
        )

    def base_delay(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1 for the second attempt), before jitter."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        if self.explicit:
            return self.explicit[min(retry, len(self.explicit)) - 1]
        return min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``retry``, with jitter: in ``[base * (1 - jitter), base]``."""
        base = self.base_delay(retry)
        return base * (1.0 - self.jitter * (rng or random).random())


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP-date), capped at a day.

    None when the header is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or clock.now())).total_seconds()
    return min(max(0.0, seconds), float(WEBHOOK_RETRY_AFTER_MAX_S))
