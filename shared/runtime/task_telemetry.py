"""Dramatiq middleware that measures and traces tasks, and keeps each task's log context its own."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import dramatiq
import structlog
from opentelemetry.trace import SpanKind

from shared.messaging import tasks, tracing
from shared.runtime.outcomes import PERMANENT

if TYPE_CHECKING:
    from shared.runtime.metrics import WorkerMetrics


def outcome_of(message: dramatiq.MessageProxy, exception: BaseException | None) -> str:
    """``ok``, ``retry`` (will run again), ``failed`` (a permanent error) or ``dead`` (out of retries)."""
    if exception is None:
        return "ok"
    if not message.failed:
        return "retry"
    return "failed" if isinstance(exception, PERMANENT) else "dead"


class TaskMetrics(dramatiq.Middleware):
    """Times every task by actor and outcome, and counts retries.

    Must come before ``Retries`` in the middleware list, so its ``after_*`` hook (run in reverse
    order) sees the outcome ``Retries`` decided.
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._local.started = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = getattr(self._local, "started", None)
        if started is None:
            return
        self._local.started = None
        outcome = outcome_of(message, exception)
        self.metrics.task_seconds.labels(actor=message.actor_name, outcome=outcome).observe(
            time.perf_counter() - started
        )
        if outcome == "retry":
            self.metrics.task_retries.labels(actor=message.actor_name).inc()

    after_skip_message = after_process_message


class TaskTracing(dramatiq.Middleware):
    """Carries the sender's trace in each message's options and runs the task in a span of it.

    Work-queue tokens are left alone: the token that runs an entry is any token, so their actors
    continue the trace of the entry they claim. A message sent outside any trace starts no span.
    Each task also starts with a clean log context (worker threads are reused).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        if tracing.TRACEPARENT not in message.options:
            traceparent = tracing.current_traceparent()
            if traceparent is not None:
                message.options[tracing.TRACEPARENT] = traceparent

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(actor=message.actor_name, message_id=message.message_id)
        traceparent = message.options.get(tracing.TRACEPARENT)
        if not traceparent or message.queue_name in tasks.TOKENS:
            self._local.span = None
            return
        manager = tracing.span(
            f"task {message.actor_name}",
            parent=traceparent,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "dramatiq", "messaging.destination.name": message.queue_name},
        )
        current = manager.__enter__()
        self._local.span = (manager, current)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        held = getattr(self._local, "span", None)
        self._local.span = None
        if held is not None:
            manager, current = held
            if exception is not None:
                tracing.fail(current, exception)
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
