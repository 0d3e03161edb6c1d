"""semaflow's Dramatiq middleware: what happens to a job when its work fails."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
import structlog

from shared import keys
from shared.clock import now_ms
from shared.errors import InvalidInput, PermanentError, StorageUnavailable
from shared.messaging import bus, tasks
from shared.messaging.events import CloudEvent, JobFailed
from shared.messaging.workqueue import DEFAULT_LEASE_MS, Entry, WorkQueue
from shared.records import deadletters, jobs
from shared.runtime import time_limits

log = structlog.get_logger(__name__)

PERMANENT: tuple[type[Exception], ...] = (PermanentError, InvalidInput)


class WorkOutcomes(dramatiq.Middleware):
    """Settles failed work once Dramatiq's ``Retries`` has decided its fate.

    A work-queue entry (ingest and delete stages) is judged by its own attempts (every claim of
    it counts one, whichever token ran it), not by its token's retries:

    - permanent error (invalid data): the job fails, the entry is released;
    - more than ``max_retries`` retries: the entry becomes a dead letter and the job ``dead`` —
      unless the failure is an outage (Redis or the object store unreachable) and the entry was
      queued less than ``outage_patience_ms`` ago: an outage says nothing about the work itself;
    - its token will be retried: the job keeps running and records the error as its last one, and
      the claim's lease is stretched over the back-off (should the token not come back by then,
      the entry is taken back and run by another);
    - its token gave up although the entry has attempts left (a token that had resumed another
      entry's claim): the entry goes back to the front of its level and a new token is sent.

    Any other actor's message that belongs to a tenant (a mail) becomes a dead letter once its
    retries are exhausted.

    Must come *before* ``Retries`` in the middleware list: Dramatiq runs ``after_*`` hooks in
    reverse order, and this one needs ``message.failed`` as ``Retries`` left it.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        source: str,
        stream_maxlen: int,
        dead_letter_retention_s: int,
        max_retries: int = 5,
        min_backoff_ms: int = 500,
        max_backoff_ms: int = 60_000,
        lease_ms: int = DEFAULT_LEASE_MS,
        outage_patience_ms: int = 3_600_000,
    ) -> None:
        self.client = client
        self.source = source
        self.stream_maxlen = stream_maxlen
        self.retention_s = dead_letter_retention_s
        self.max_retries = max_retries
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.lease_ms = lease_ms
        self.outage_patience_ms = outage_patience_ms

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
            self._settle_message(broker, message, exception)
            return
        queue = WorkQueue(self.client, message.queue_name, lease_ms=self.lease_ms)
        entry = queue.claimed_entry(message.message_id)
        if entry is None:
            log.error("task.failed_without_entry", actor=message.actor_name, error=str(exception))
            return
        error = time_limits.describe(broker, message, exception)[:1000]
        if isinstance(exception, PERMANENT):
            log.error("task.failed", job_id=entry.id, error=error)
            if jobs.finish(self.client, entry.id, jobs.JobState.FAILED, error=error):
                self._announce(entry.kwargs, entry.id, error)
        elif entry.attempts > self.max_retries and not self._patient(entry, exception):
            letter = deadletters.record(
                self.client, queue.name, entry, error=error, attempts=entry.attempts, retention_s=self.retention_s
            )
            log.error("task.dead", job_id=entry.id, dead_letter=letter.id, error=error, attempts=entry.attempts)
            if jobs.finish(self.client, entry.id, jobs.JobState.DEAD, error=error, dead_letter=letter.id):
                self._announce(entry.kwargs, entry.id, error, dead_letter=letter.id)
        else:
            log.warning("task.retrying", job_id=entry.id, error=error, attempts=entry.attempts)
            if self.client.exists(keys.job(entry.id)):
                self.client.hset(keys.job(entry.id), "error", error)
            if not message.failed:
                # Dramatiq's back-off before this retry is at most this (it jitters below it).
                retried = max(0, int(message.options.get("retries", 1)) - 1)
                backoff_ms = min(self.min_backoff_ms * 2 ** min(retried, 32), self.max_backoff_ms)
                queue.renew(message.message_id, for_ms=backoff_ms + self.lease_ms)
            else:
                # Its token is spent; the entry waits at the front, and a token comes after the longest back-off.
                queue.reap(message.message_id)
                tasks.TOKENS[queue.name].send(broker, tasks.Token(), delay_ms=self.max_backoff_ms)
            return
        queue.release(message.message_id)

    def _patient(self, entry: Entry, exception: BaseException) -> bool:
        """Whether ``exception`` is an outage of a dependency the entry may still wait out."""
        outage = isinstance(exception, StorageUnavailable | redis.ConnectionError | redis.TimeoutError)
        return outage and now_ms() - entry.enqueued_ms < self.outage_patience_ms

    def _settle_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, exception: BaseException
    ) -> None:
        """A plain actor's message (mail, maintenance) failed: a tenant's work that ran out of retries is kept."""
        error = time_limits.describe(broker, message, exception)[:1000]
        log.error("task.failed", actor=message.actor_name, error=error, failed=message.failed)
        tenant = message.kwargs.get("tenant")
        if not message.failed or isinstance(exception, PERMANENT) or not isinstance(tenant, str):
            return
        letter = deadletters.new_letter(
            tenant,
            message.queue_name,
            message.actor_name,
            error=error,
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
