"""Repeated Redis connection failures: a warning every few seconds and one line on recovery, other errors untouched."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import dramatiq.errors
import pytest
import redis.exceptions
import structlog.testing

from shared.runtime.outage import Outage, quiet_dramatiq_consumers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _events(logs: list[MutableMapping[str, Any]]) -> list[Any]:
    return [e["event"] for e in logs]


def test_repeated_connection_failures_log_once_per_interval_then_recovery_once() -> None:
    clock = Clock()
    outage = Outage(every_s=5.0, clock=clock)
    refused = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    with structlog.testing.capture_logs() as logs:
        for _ in range(40):  # 17 a second, as the loops of a process do, for a bit over 2 s
            assert outage.failed(refused, loop="heartbeat")
            clock.now += 0.06
        clock.now += 3.0  # 5.4 s since the first one
        assert outage.failed(refused, loop="scheduler")
        assert outage.down
        outage.recovered()
        outage.recovered()
    assert _events(logs) == ["redis.unavailable", "redis.unavailable", "redis.recovered"]
    first, second, back = logs
    assert first["log_level"] == "warning" and first["loop"] == "heartbeat" and first["failures_not_logged"] == 0
    assert second["loop"] == "scheduler" and second["failures_not_logged"] == 39 and second["down_s"] == 5.4
    assert back["log_level"] == "info" and back["down_s"] == 5.4
    assert not outage.down


def test_the_next_outage_is_logged_at_once() -> None:
    clock = Clock()
    outage = Outage(every_s=5.0, clock=clock)
    with structlog.testing.capture_logs() as logs:
        outage.failed(redis.exceptions.TimeoutError("Timeout reading from socket"))
        clock.now += 1
        outage.recovered()
        clock.now += 1
        closed = dramatiq.errors.BrokerConnectionError("Connection closed by server.")  # type: ignore[no-untyped-call]
        outage.failed(closed)
    assert _events(logs) == ["redis.unavailable", "redis.recovered", "redis.unavailable"]
    assert logs[2]["down_s"] == 0.0


def test_other_errors_are_left_to_the_caller() -> None:
    outage = Outage()
    with structlog.testing.capture_logs() as logs:
        assert not outage.failed(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))
        assert not outage.failed(ValueError("bad payload"))
        outage.recovered()
    assert logs == [] and not outage.down


def test_a_dramatiq_consumers_connection_errors_go_to_the_outage_and_its_other_lines_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(every_s=60.0)
    quiet_dramatiq_consumers({"unit-q"}, outage)
    quiet_dramatiq_consumers({"unit-q"}, outage)  # once per logger however often a worker starts
    consumer = logging.getLogger("dramatiq.worker.ConsumerThread(unit-q.DQ)")
    assert len(consumer.filters) == 1
    caplog.set_level(logging.INFO)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):  # Dramatiq's own wording (dramatiq/worker.py)
            error = dramatiq.errors.BrokerConnectionError("Error 111 connecting to 127.0.0.1:6379.")  # type: ignore[no-untyped-call]
            consumer.critical("Consumer encountered a connection error: %s", error)
            consumer.info("Restarting consumer in %0.2f seconds.", 3.0)
        consumer.critical("Consumer encountered an unexpected error.")
        consumer.info("Restarting consumer in %0.2f seconds.", 3.0)
    assert _events(logs) == ["redis.unavailable"]
    assert logs[0]["logger"] == "dramatiq.worker.ConsumerThread(unit-q.DQ)"
    assert [r.getMessage() for r in caplog.records] == [
        "Consumer encountered an unexpected error.",
        "Restarting consumer in 3.00 seconds.",
    ]
