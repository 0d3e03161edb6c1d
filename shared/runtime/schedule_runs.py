"""A Dramatiq middleware that records how each run of a schedule goes, from the messages it enqueued."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
import structlog

from shared.records import schedule_state
from shared.records.schedule_state import Outcome
from shared.runtime import time_limits

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)


def _run_of(message: dramatiq.MessageProxy) -> tuple[str, str] | None:
    """The schedule and run id a maintenance message carries (None: it was not sent by a schedule run)."""
    schedule, run_id = message.kwargs.get("schedule"), message.kwargs.get("run_id")
    if isinstance(schedule, str) and schedule and isinstance(run_id, str) and run_id:
        return schedule, run_id
    return None


class ScheduleRuns(dramatiq.Middleware):
    """Tells a schedule run that its task runs, then how it ended: ``succeeded`` (the actor's return value,
    a summary, is the detail), ``failed`` once Dramatiq gave up, or ``retrying`` while a retry is pending.

    Must come *before* ``Retries`` in the middleware list: Dramatiq runs ``after_*`` hooks in reverse
    order, and this one needs ``message.failed`` as ``Retries`` left it. Reports are best effort: a
    run whose report cannot be written keeps its earlier outcome (the task itself is not failed for it).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _report(self, message: dramatiq.MessageProxy, outcome: Outcome, detail: str = "") -> None:
        run = _run_of(message)
        if run is None:
            return
        try:
            schedule_state.report(self.client, *run, outcome, detail)
        except Exception as exc:  # Redis away: the record keeps its earlier outcome
            log.warning("schedule.report_failed", schedule=run[0], run_id=run[1], error=str(exc))

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        retries = int(message.options.get("retries", 0))
        self._report(message, Outcome.RUNNING, f"retry {retries}" if retries else "")

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            self._report(message, Outcome.SUCCEEDED, result if isinstance(result, str) else "")
        elif message.failed:
            self._report(message, Outcome.FAILED, time_limits.describe(broker, message, exception))
        else:
            self._report(
                message, Outcome.RETRYING, f"{time_limits.describe(broker, message, exception)} (a retry is pending)"
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._report(message, Outcome.FAILED, "skipped: the message outlived its age limit")
