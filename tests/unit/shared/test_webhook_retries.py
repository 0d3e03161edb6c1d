from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.constants import WEBHOOK_RETRY_AFTER_MAX_S
from shared.errors import ConfigurationError
from shared.webhooks.retries import RetrySchedule, parse_delays, retry_after_s


def test_the_default_schedule_doubles_from_60_s_to_a_1200_s_cap() -> None:
    schedule = RetrySchedule(max_attempts=15)
    assert [schedule.base_delay(n) for n in range(1, 8)] == [60, 120, 240, 480, 960, 1200, 1200]


def test_jitter_only_shortens_a_delay_and_by_at_most_its_fraction() -> None:
    schedule = RetrySchedule(max_attempts=15, jitter=0.2)
    rng = random.Random(7)
    delays = [schedule.delay(3, rng) for _ in range(2000)]
    assert all(240 * 0.8 <= d <= 240 for d in delays)
    assert max(delays) - min(delays) > 40  # spread out, not a constant


def test_no_jitter_gives_the_base_delay() -> None:
    assert RetrySchedule(max_attempts=3, jitter=0.0).delay(2) == 120


def test_an_explicit_schedule_repeats_its_last_delay() -> None:
    schedule = RetrySchedule(max_attempts=10, explicit=parse_delays("5, 30,300"))
    assert [schedule.base_delay(n) for n in range(1, 6)] == [5, 30, 300, 300, 300]


@pytest.mark.parametrize("text", ["", "5,x", "5,-1", " , "])
def test_a_malformed_schedule_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_delays(text)


def test_retry_after_reads_seconds_and_http_dates_and_is_capped() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120
    assert retry_after_s(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert retry_after_s(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    assert retry_after_s("999999999") == WEBHOOK_RETRY_AFTER_MAX_S
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
