"""semaflow's Dramatiq middleware: what happens to a job when its work fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
import structlog

from shared import keys
from shared.errors import InvalidInput, PermanentError
from shared.messaging import bus, tasks
from shared.messaging.events import CloudEvent, JobFailed
from shared.messaging.workqueue import WorkQueue
from shared.records import deadletters, jobs

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

PERMANENT: tuple[type[Exception], ...] = (PermanentError, InvalidInput)


class WorkOutcomes(dramatiq.Middleware):
    """Settles failed work once Dramatiq's ``Retries`` has decided its fate.

    A work-queue entry (ingest and delete stages):

    - will be retried: the job keeps running and records the error as its last one;
    - permanent error (invalid data): the job fails, the entry is released;
    - retries exhausted: the entry becomes a dead letter and the job ``dead``.

    Any other actor's message that belongs to a tenant (a mail) becomes a dead letter once its
    retries are exhausted.

    Must come *before* ``Retries`` in the middleware list: Dramatiq runs ``after_*`` hooks in
    reverse order, and this one needs ``message.failed`` as ``Retries`` left it.
    """

    def __init__(self, client: redis.Redis, *, source: str, stream_maxlen: int, dead_letter_retention_s: int) -> None:
        self.client = client
        self.source = source
        self.stream_maxlen = stream_maxlen
        self.retention_s = dead_letter_retention_s

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        if message.queue_name not in tasks.TOKENS:
            self._settle_message(message, exception)
            return
        queue = WorkQueue(self.client, message.queue_name)
        entry = queue.claimed_entry(message.message_id)
        if entry is None:
            log.error("task.failed_without_entry", actor=message.actor_name, error=str(exception))
            return
        error = f"{type(exception).__name__}: {exception}"[:1000]
        if not message.failed:
            log.warning("task.retrying", job_id=entry.id, error=error, retries=message.options.get("retries"))
            if self.client.exists(keys.job(entry.id)):
                self.client.hset(keys.job(entry.id), "error", error)
            return
        if isinstance(exception, PERMANENT):
            log.error("task.failed", job_id=entry.id, error=error)
            if jobs.finish(self.client, entry.id, jobs.JobState.FAILED, error=error):
                self._announce(entry.kwargs, entry.id, error)
        else:
            attempts = int(message.options.get("retries", 0))
            letter = deadletters.record(
                self.client, queue.name, entry, error=error, attempts=attempts, retention_s=self.retention_s
            )
            log.error("task.dead", job_id=entry.id, dead_letter=letter.id, error=error, attempts=attempts)
            if jobs.finish(self.client, entry.id, jobs.JobState.DEAD, error=error, dead_letter=letter.id):
                self._announce(entry.kwargs, entry.id, error, dead_letter=letter.id)
        queue.release(message.message_id)

    def _settle_message(self, message: dramatiq.MessageProxy, exception: BaseException) -> None:
        """A plain actor's message (mail, maintenance) failed: a tenant's work that ran out of retries is kept."""
        log.error("task.failed", actor=message.actor_name, error=str(exception), failed=message.failed)
        tenant = message.kwargs.get("tenant")
        if not message.failed or isinstance(exception, PERMANENT) or not isinstance(tenant, str):
            return
        letter = deadletters.new_letter(
            tenant,
            message.queue_name,
            message.actor_name,
            error=f"{type(exception).__name__}: {exception}"[:1000],
            attempts=int(message.options.get("retries", 0)),
            arguments=dict(message.kwargs),
        )
        deadletters.store(self.client, letter, retention_s=self.retention_s)
        log.error("task.dead", actor=message.actor_name, dead_letter=letter.id)

    def _announce(self, kwargs: dict[str, Any], job_id: str, error: str, dead_letter: str | None = None) -> None:
        event = JobFailed(
            tenant=kwargs["tenant"],
            collection=kwargs["collection"],
            job_id=job_id,
            error=error,
            dead_letter=dead_letter,
        )
        bus.publish(self.client, CloudEvent.wrap(event, source=self.source, subject=job_id), maxlen=self.stream_maxlen)
