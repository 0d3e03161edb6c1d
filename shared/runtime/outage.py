"""Redis outages seen by loops that retry: one warning every few seconds, not one per attempt.

While Redis is down (restarting, say), every loop of a process that talks to it fails again and again:
heartbeats, queue top-ups, stream consumers, the scheduler's passes, Dramatiq's consumers. Each of them
reports a *connection* failure to the process's :data:`redis_outage`, which logs ``redis.unavailable`` at
most once per :data:`LOG_EVERY_S` (with how many failures it left out) and ``redis.recovered`` once when a
call succeeds again. Any other error is the caller's to log, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import dramatiq.common
import dramatiq.errors
import redis.exceptions
import structlog

log = structlog.get_logger(__name__)

LOG_EVERY_S: Final = 5.0

_CONNECTION_ERRORS: Final = (
    redis.exceptions.ConnectionError,  # refused, reset, closed by the server, still loading its data
    redis.exceptions.TimeoutError,
    dramatiq.errors.BrokerConnectionError,  # Dramatiq's Redis broker wraps the two above in it
)


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis could not be reached (rather than that a command went wrong)."""
    return isinstance(exc, _CONNECTION_ERRORS)


class Outage:
    """Rate-limited logging of one dependency's connection failures, shared by the threads of a process."""

    def __init__(self, *, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._logged_at = 0.0
        self._left_out = 0

    @property
    def down(self) -> bool:
        """Whether the last news was a connection failure."""
        return self._down_since is not None

    def failed(self, exc: BaseException, **context: Any) -> bool:
        """Note ``exc`` if it is a connection failure (logged at most once per ``every_s``); returns whether it
        was one. A caller logs any other error itself.
        """
        if not is_connection_failure(exc):
            return False
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            elif now - self._logged_at < self.every_s:
                self._left_out += 1
                return True
            self._logged_at, left_out, self._left_out = now, self._left_out, 0
            down_s = now - self._down_since
        log.warning(
            "redis.unavailable", error=str(exc), down_s=round(down_s, 1), failures_not_logged=left_out, **context
        )
        return True

    def recovered(self) -> None:
        """Note a call that succeeded: ends an outage (logged once)."""
        if self._down_since is None:
            return
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                return
            down_s, self._down_since, self._left_out = now - self._down_since, None, 0
        log.info("redis.recovered", down_s=round(down_s, 1))


redis_outage: Final = Outage()
"""The process's one view of Redis: every loop reports to it, so an outage is a few lines whatever the loops."""


class _DramatiqConsumerErrors(logging.Filter):
    """Turns a Dramatiq consumer's "connection error" (critical) and the "Restarting consumer" line after it
    into a report to :data:`redis_outage`; its other lines pass as they are."""

    def __init__(self, outage: Outage) -> None:
        super().__init__()
        self.outage = outage
        self._after_connection_error = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.args[0] if isinstance(record.args, tuple) and record.args else None
        message = str(record.msg)
        if isinstance(exc, BaseException) and message.startswith("Consumer encountered a connection error"):
            self.outage.failed(exc, logger=record.name)
            self._after_connection_error = True
            return False
        if self._after_connection_error and message.startswith("Restarting consumer"):
            self._after_connection_error = False
            return False
        return True


def quiet_dramatiq_consumers(queues: set[str], outage: Outage = redis_outage) -> None:
    """Route connection errors of the Dramatiq consumers of ``queues`` (and their delay queues) to ``outage``."""
    for queue in queues:
        for name in (queue, dramatiq.common.dq_name(queue)):
            logger = logging.getLogger(f"dramatiq.worker.ConsumerThread({name})")
            if not any(isinstance(f, _DramatiqConsumerErrors) for f in logger.filters):
                logger.addFilter(_DramatiqConsumerErrors(outage))
