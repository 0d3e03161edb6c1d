"""Job control: cancel, retry, dead-letter replay and queue statistics, independent of HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import structlog

from shared import clock, keys
from shared.errors import Conflict
from shared.messaging import bus, dispatch, tasks
from shared.messaging.events import CloudEvent, JobCancelled
from shared.messaging.workqueue import AsyncWorkQueue, Entry, Priority
from shared.records import deadletters, jobs
from shared.records.deadletters import DeadLetter
from shared.records.jobs import Job, JobFilter, JobKind, JobState, Task
from shared.webhooks.deliveries import queue_stats

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

log = structlog.get_logger(__name__)
SOURCE = "semaflow/gateway"
QUEUE_SERVICES: dict[str, str] = {tasks.EMBED_QUEUE: "embedder", tasks.INDEX_QUEUE: "indexer"}
WORKER_SERVICES: tuple[str, ...] = ("embedder", "indexer", "notifier", "scheduler")
BULK_PAGE = 500

#: Replays a dead letter of work that is not a job's (a webhook delivery); answers with what it queued.
LetterReplay = Callable[[DeadLetter], Awaitable[dict[str, Any]]]
# Plain actors whose dead letters are replayed by sending their message again.
_RESENDABLE: dict[str, tasks.TaskSpec[Any]] = {spec.actor_name: spec for spec in (tasks.SEND_EMAIL, tasks.SEND_DIGEST)}


class JobControl:
    """What an operator or client can do to jobs and dead letters."""

    def __init__(
        self,
        client: aioredis.Redis,
        broker: dramatiq.Broker,
        *,
        stream_maxlen: int,
        replayers: Mapping[str, LetterReplay] | None = None,
    ) -> None:
        self.client = client
        self.broker = broker
        self.stream_maxlen = stream_maxlen
        self.replayers = dict(replayers or {})

    async def _reload(self, job_id: str) -> Job:
        job = await jobs.aget(self.client, job_id)
        assert job is not None
        return job

    async def _state(self, job_id: str) -> str:
        """The job's current state for a message ('gone' once its record expired)."""
        raw = await self.client.hget(keys.job(job_id), "state")
        return keys.text(raw) if raw is not None else "gone"

    async def cancel(self, job: Job) -> Job:
        """Cancel a queued or running job.

        A queued job leaves its queue at once; a running one stops at its next chunk boundary and
        publishes nothing (the indexer's publish refuses a cancelled job atomically).

        Raises:
            Conflict: the job already finished (or its result was published a moment ago).
        """
        if not await jobs.acancel(self.client, job.id):
            raise Conflict(f"job {job.id} is {await self._state(job.id)}; only queued or running jobs can be cancelled")
        for queue in tasks.TOKENS:
            await AsyncWorkQueue(self.client, queue).remove(job.id)
        event = JobCancelled(tenant=job.tenant, collection=job.collection, job_id=job.id)
        await bus.apublish(
            self.client, CloudEvent.wrap(event, source=SOURCE, subject=job.id), maxlen=self.stream_maxlen
        )
        log.info("job.cancelled", job_id=job.id, was=job.state.value)
        return await self._reload(job.id)

    async def retry(self, job: Job) -> Job:
        """Queue a failed, cancelled or dead job again as a new attempt, from its first stage.

        Raises:
            Conflict: the job is queued, running or succeeded, or has no recorded task.
        """
        if job.task is None:
            raise Conflict(f"job {job.id} cannot be retried: it records no task")
        if not await jobs.requeue(self.client, job.id):
            state = await self._state(job.id)
            raise Conflict(f"job {job.id} is {state}; only failed, cancelled or dead jobs can be retried")
        if job.dead_letter:
            letter = await deadletters.get(self.client, job.tenant, job.dead_letter)
            if letter is not None:
                await deadletters.delete(self.client, letter)
        entry = Entry(job.id, job.tenant, job.priority, job.task.arguments, clock.now_ms())
        await dispatch.asubmit(self.client, self.broker, job.task.queue, entry)
        log.info("job.retried", job_id=job.id, was=job.state.value)
        return await self._reload(job.id)

    async def replay(self, letter: DeadLetter) -> dict[str, Any]:
        """Queue a dead letter's work again and remove the letter; answers with what was queued.

        A job's letter queues the job again (and answers with the job); a webhook delivery's is
        handed to the replayer registered for its op; a mail's message is simply sent again.

        Raises:
            Conflict: the work is under way already, or cannot be replayed any more.
        """
        if letter.job_id is not None:
            return (await self._replay_job(letter, letter.job_id)).public()
        replay = self.replayers.get(letter.op)
        if replay is not None:
            answer = await replay(letter)
        elif letter.op in _RESENDABLE:
            spec = _RESENDABLE[letter.op]
            await asyncio.to_thread(spec.send, self.broker, spec.parse(letter.arguments))
            answer = {"queue": letter.queue, "op": letter.op, "state": "queued", "arguments": letter.arguments}
        else:
            raise Conflict(f"dead letters of {letter.op!r} cannot be replayed")
        await deadletters.delete(self.client, letter)
        log.info("dead_letter.replayed", dead_letter=letter.id, op=letter.op)
        return answer

    async def _replay_job(self, letter: DeadLetter, job_id: str) -> Job:
        job = await jobs.aget(self.client, job_id)
        if job is None:
            # The job record outlived its retention; the dead letter did not: recreate the job.
            job = self._job_for(letter)
            await jobs.create(self.client, job)
        elif job.state in (JobState.QUEUED, JobState.RUNNING):
            raise Conflict(f"job {job.id} is {job.state.value} already")
        elif job.state is JobState.SUCCEEDED:
            await deadletters.delete(self.client, letter)
            raise Conflict(f"job {job.id} has succeeded since; the dead letter was removed")
        else:
            await jobs.requeue(self.client, job.id)
        await deadletters.delete(self.client, letter)
        await dispatch.asubmit(self.client, self.broker, letter.queue, letter.entry(clock.now_ms()))
        log.info("dead_letter.replayed", dead_letter=letter.id, job_id=job.id)
        return await self._reload(job.id)

    @staticmethod
    def _job_for(letter: DeadLetter) -> Job:
        stamp = clock.now()
        kind = JobKind.DELETE if letter.op == tasks.DELETE_DOCUMENTS.name else JobKind.INGEST
        documents = len(letter.arguments.get("document_ids", ())) if kind is JobKind.DELETE else 0
        return Job(
            id=letter.job_id,
            tenant=letter.tenant,
            collection=letter.collection or "",
            kind=kind,
            state=JobState.QUEUED,
            priority=letter.priority,
            documents=documents,
            batch_id=letter.arguments.get("batch_id"),
            created_at=stamp,
            updated_at=stamp,
            task=Task(queue=letter.queue, arguments=letter.arguments),
        )

    async def bulk(self, tenant: str, flt: JobFilter, action: str, *, dry_run: bool = False) -> int:
        """Cancel or retry every matching job of ``tenant``; returns how many it applied to (with ``dry_run``,
        how many it would apply to now, changing nothing)."""
        eligible = jobs.ACTIVE if action == "cancel" else jobs.RETRYABLE
        matched = 0
        cursor: str | None = None
        while True:
            page, cursor = await jobs.scan(self.client, tenant, flt, limit=BULK_PAGE, cursor=cursor)
            if dry_run:
                matched += sum(1 for job in page if job.state in eligible)
                if cursor is None:
                    return matched
                continue
            for job in page:
                try:
                    await (self.cancel(job) if action == "cancel" else self.retry(job))
                except Conflict:
                    continue
                matched += 1
            if cursor is None:
                return matched

    async def queues(self, workers: dict[str, int] | None = None) -> dict[str, Any]:
        """Statistics of every work queue (``workers``: the live processes per service, if already counted)."""
        workers = workers if workers is not None else await self.workers()
        dead = await deadletters.count_by_queue(self.client, [*tasks.TOKENS, tasks.NOTIFY_QUEUE])
        out: dict[str, Any] = {}
        for queue, service in QUEUE_SERVICES.items():
            depth = await AsyncWorkQueue(self.client, queue).depth()
            age = (clock.now_ms() - depth.oldest_enqueued_ms) / 1000 if depth.oldest_enqueued_ms is not None else 0.0
            out[queue] = {
                "depth": depth.by_priority,
                "delayed": await self._delayed(queue),
                "in_flight": depth.in_flight,
                "dead": dead[queue],
                "oldest_age_seconds": round(max(0.0, age), 3),
                "workers": workers.get(service, 0),
                "processed_last_minute": depth.processed_last_minute,
            }
        out[tasks.NOTIFY_QUEUE] = await self._notify_stats(dead[tasks.NOTIFY_QUEUE], workers.get("notifier", 0))
        return out

    async def workers(self) -> dict[str, int]:
        """Live processes of every worker service, from the index of heartbeats (one read, no keyspace scan).

        Without any index (processes that predate it, before their first restart), from a scan of the
        heartbeat keys as before.
        """
        found = dict.fromkeys(WORKER_SERVICES, 0)
        if not await self.client.exists(keys.heartbeats()):
            prefix = keys.heartbeat_pattern().removesuffix("*:*")
            async for key in self.client.scan_iter(match=keys.heartbeat_pattern(), count=1000):
                service = keys.text(key).removeprefix(prefix).split(":", 1)[0]  # {prefix}{service}:{host}:{pid}
                if service in found:
                    found[service] += 1
            return found
        live = cast(list[bytes], await self.client.zrangebyscore(keys.heartbeats(), clock.now_ms(), "+inf"))
        for member in live:
            service = keys.text(member).split(":", 1)[0]  # {service}:{host}:{pid}
            if service in found:
                found[service] += 1
        return found

    async def _notify_stats(self, dead: int, workers: int) -> dict[str, Any]:
        """The notify queue as webhook deliveries: due now, waiting out a retry delay, attempts under way."""
        now = clock.now_ms()
        stats = await queue_stats(self.client, now)
        age = (now - stats.oldest_due_ms) / 1000 if stats.oldest_due_ms is not None else 0.0
        return {
            "depth": {Priority.NORMAL.value: stats.due},
            "delayed": stats.delayed,
            "in_flight": stats.in_flight,
            "dead": dead,
            "oldest_age_seconds": round(max(0.0, age), 3),
            "workers": workers,
            "processed_last_minute": stats.attempts_last_minute,
        }

    async def _delayed(self, queue: str) -> int:
        """Work waiting out a retry back-off: tokens in Dramatiq's delay queue, and those its workers hold.

        Each Dramatiq worker holds its fetched messages in a set of its own; the workers are those of
        Dramatiq's heartbeat set (a dead one stays there until its messages are requeued), so the sets are
        read by name rather than found by scanning the keyspace.
        """
        members = cast(list[bytes], await self.client.zrange(keys.dramatiq_heartbeats(), 0, -1))
        worker_ids = [keys.text(w) for w in members]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(keys.dramatiq_queues(queue)[1])
            for worker_id in worker_ids:
                pipe.scard(keys.dramatiq_delay_acks(worker_id, queue))
            counts = await pipe.execute()
        return sum(int(n) for n in counts)
