"""The SDK's retry schedule and its reading of ``Retry-After``."""

from __future__ import annotations

import email.utils
import random

from semaflow.client.errors import NotFound, RateLimited, ServerError, Unavailable, ValidationFailed, from_response
from semaflow.client.retries import RetryPolicy, parse_retry_after


def test_backoff_is_full_jitter_under_an_exponential_ceiling_with_a_cap() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    rng = random.Random(7)
    for retry, ceiling in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)):
        delays = [policy.delay(retry, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it spreads over the whole range
        assert len(set(delays)) > 150


def test_retry_after_is_honoured_with_at_most_a_little_jitter() -> None:
    policy = RetryPolicy(base_s=0.5)
    delays = [policy.delay(0, 3.0) for _ in range(100)]
    assert all(3.0 <= d <= 3.5 for d in delays)


def test_attempts_and_total_time_are_both_bounded() -> None:
    policy = RetryPolicy(max_attempts=3, max_time_s=10.0)
    assert policy.allows(1, started=100.0, delay_s=1.0, now=100.0)
    assert policy.allows(2, started=100.0, delay_s=1.0, now=105.0)
    assert not policy.allows(3, started=100.0, delay_s=0.0, now=100.0)
    assert not policy.allows(1, started=100.0, delay_s=6.0, now=105.0)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30.0
    assert parse_retry_after(date, now=1_000_100) == 0.0


def test_problem_documents_become_errors_by_status() -> None:
    body = b'{"type": "https://semaflow.dev/problems/not-found", "title": "Not Found", "status": 404, "detail": "x"}'
    error = from_response(404, body, None)
    assert isinstance(error, NotFound)
    assert (error.status, error.title, error.detail) == (404, "Not Found", "x")
    assert error.type == "https://semaflow.dev/problems/not-found"
    invalid = from_response(
        422,
        b'{"type": "t", "title": "Unprocessable Content", "status": 422, "detail": "d",'
        b' "errors": [{"pointer": "/k", "detail": "too small", "type": "greater_than_equal"}]}',
        None,
    )
    assert isinstance(invalid, ValidationFailed)
    assert [(e.pointer, e.type) for e in invalid.errors] == [("/k", "greater_than_equal")]
    limited = from_response(429, b'{"type": "t", "title": "Too Many Requests", "status": 429, "detail": "d"}', 12.0)
    assert isinstance(limited, RateLimited) and limited.retry_after == 12.0
    assert isinstance(from_response(503, b"<html>down</html>", None), Unavailable)
    bare = from_response(502, b"bad gateway", None)
    assert isinstance(bare, ServerError) and bare.detail == "bad gateway"
