"""semaflow's Dramatiq middleware: jobs are marked failed when their message gives up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
import structlog

from shared import bus, jobs
from shared.events import CloudEvent, JobFailed

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)


class JobFailures(dramatiq.Middleware):
    """When a message fails for good (retries exhausted or a permanent error), fail its job."""

    def __init__(self, client: redis.Redis, *, source: str, stream_maxlen: int) -> None:
        self.client = client
        self.source = source
        self.stream_maxlen = stream_maxlen

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Runs after Retries decided whether ``message`` failed."""
        if exception is None or not message.failed:
            return
        kwargs = message.kwargs or {}
        job_id = kwargs.get("job_id")
        log.error("task.failed", actor=message.actor_name, job_id=job_id, error=str(exception))
        if not job_id:
            return
        error = f"{type(exception).__name__}: {exception}"[:1000]
        if jobs.transition(self.client, job_id, jobs.JobState.FAILED, error=error):
            event = JobFailed(tenant=kwargs["tenant"], collection=kwargs["collection"], job_id=job_id, error=error)
            bus.publish(
                self.client, CloudEvent.wrap(event, source=self.source, subject=job_id), maxlen=self.stream_maxlen
            )
