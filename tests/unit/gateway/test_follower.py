"""The index follower's retry schedule."""

from __future__ import annotations

from services.gateway.search.follower import Backoff


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(first_s=1.0, max_s=30.0)
    assert [backoff.failed() for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_success_starts_over_and_says_how_many_tries_had_failed() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0)
    for _ in range(3):
        backoff.failed()
    assert backoff.succeeded() == 3
    assert backoff.succeeded() == 0
    assert backoff.failed() == 0.5
