"""What an attempt's answer means for its delivery."""

from __future__ import annotations

import random

from services.notifier.delivery import Verdict, judge
from services.notifier.http import Answer
from shared.webhooks.deliveries import Delivery, DeliveryState, Outcome
from shared.webhooks.retries import RetrySchedule

SCHEDULE = RetrySchedule(max_attempts=4, initial_s=60, max_s=1200, jitter=0.0)
NOW = 1_000_000


def _delivery(attempts: int = 0, round_start: int = 0) -> Delivery:
    return Delivery(
        id="dlv_1",
        tenant="acme",
        endpoint_id="ep_1",
        event_id="e1",
        event_type="job.succeeded",
        trigger="event",
        state=DeliveryState.DELIVERING,
        attempts=attempts,
        round_start=round_start,
        created_ms=NOW,
    )


def _judge(status: int | None, attempts: int = 0, retry_after: str | None = None, round_start: int = 0) -> Verdict:
    answer = Answer(status=status, latency_ms=1.0, retry_after=retry_after, error=None if status else "timed out")
    return judge(answer, _delivery(attempts, round_start), SCHEDULE, NOW, random.Random(1))


def test_2xx_succeeds() -> None:
    for status in (200, 201, 204, 299):
        assert _judge(status).outcome is Outcome.SUCCEEDED


def test_failures_retry_after_the_schedule() -> None:
    first = _judge(500)
    assert first.outcome is Outcome.RETRY and first.next_ms == NOW + 60_000
    third = _judge(None, attempts=2)
    assert third.outcome is Outcome.RETRY and third.next_ms == NOW + 240_000
    for status in (301, 400, 404, 429, 500, 503):
        assert _judge(status).outcome is Outcome.RETRY


def test_the_last_attempt_exhausts_the_delivery() -> None:
    assert _judge(500, attempts=3).outcome is Outcome.EXHAUSTED


def test_a_requeued_delivery_gets_a_fresh_set_of_attempts() -> None:
    verdict = _judge(500, attempts=5, round_start=4)
    assert verdict.outcome is Outcome.RETRY and verdict.next_ms == NOW + 120_000


def test_429_and_503_honour_retry_after() -> None:
    for status in (429, 503):
        verdict = _judge(status, retry_after="7")
        assert verdict.outcome is Outcome.RETRY and verdict.next_ms == NOW + 7_000
    assert _judge(500, retry_after="7").next_ms == NOW + 60_000
    assert _judge(429, retry_after="garbage").next_ms == NOW + 60_000


def test_410_gives_up_and_disables_the_endpoint() -> None:
    verdict = _judge(410)
    assert verdict.outcome is Outcome.FAILED
    assert "410" in verdict.disable_reason
