"""Accepting writes: store the batch durably, record the job, enqueue the work, announce it."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from shared import clock, keys
from shared.constants import JOB_RETENTION_S
from shared.index.documents import put_batch
from shared.messaging import bus, dispatch, tasks
from shared.messaging.events import BatchAccepted, CloudEvent
from shared.messaging.workqueue import Entry, Priority
from shared.records import jobs
from shared.records.jobs import Job, JobKind, JobState, Task

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

    from shared.index.documents import EncodedBatch
    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)
SOURCE = "semaflow/gateway"


def new_batch_id() -> str:
    """Time-ordered, unique batch id (milliseconds since the epoch, then randomness)."""
    return f"{clock.now_ms():013d}-{uuid.uuid4().hex[:12]}"


class Writes:
    """The gateway's write path, independent of HTTP."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: ObjectStore,
        broker: dramatiq.Broker,
        *,
        stream_maxlen: int,
        job_retention_s: int = JOB_RETENTION_S,
    ) -> None:
        self.client = client
        self.store = store
        self.broker = broker
        self.stream_maxlen = stream_maxlen
        self.job_retention_s = job_retention_s

    async def _reserve(self, collection: Collection, job_id: str | None = None) -> tuple[str, int]:
        """A job id (new unless given) and the write's place in the collection's order (its write sequence)."""
        seq = int(await self.client.incr(keys.write_seq(collection.tenant, collection.name)))
        return job_id or jobs.new_job_id(), seq

    async def _resume(self, job: Job) -> Job:
        """The job an earlier run of the same request made: queued again if that run died before queueing it.

        Pushing an entry already waiting or in flight changes nothing, and a job past ``queued`` has
        been claimed, so this never runs the work twice.
        """
        if job.state is JobState.QUEUED and job.task is not None:
            await dispatch.asubmit(
                self.client,
                self.broker,
                job.task.queue,
                Entry(job.id, job.tenant, job.priority, job.task.arguments, clock.now_ms()),
            )
        log.info("batch.accepted_again", job_id=job.id, batch_id=job.batch_id, state=job.state.value)
        return job

    async def _submit(
        self,
        kind: JobKind,
        documents: int,
        priority: Priority,
        op: tasks.WorkOp[Any],
        payload: tasks.EmbedBatch | tasks.DeleteDocuments | tasks.RollbackCollection,
        batch_id: str | None = None,
    ) -> Job:
        """Record the job of ``payload`` and queue its first stage."""
        job_id = payload.job_id
        arguments = op.kwargs(payload)
        queue = op.queue_name
        stamp = clock.now()
        job = Job(
            id=job_id,
            tenant=payload.tenant,
            collection=payload.collection,
            kind=kind,
            state=JobState.QUEUED,
            priority=priority,
            documents=documents,
            batch_id=batch_id,
            created_at=stamp,
            updated_at=stamp,
            task=Task(queue=queue, arguments=arguments),
            retention_s=self.job_retention_s,
        )
        await jobs.create(self.client, job)
        try:
            await dispatch.asubmit(
                self.client, self.broker, queue, Entry(job_id, job.tenant, priority, arguments, clock.now_ms())
            )
        except Exception as exc:
            # Nothing will ever run this job: say so rather than leave it queued forever.
            await jobs.afinish(self.client, job.id, JobState.FAILED, error=f"enqueue failed: {exc}")
            raise
        return job

    async def ingest(
        self,
        collection: Collection,
        batch: EncodedBatch,
        count: int,
        priority: Priority = Priority.NORMAL,
        *,
        request_digest: str | None = None,
    ) -> Job:
        """Store ``batch`` (the batch file of ``count`` documents), then queue its embedding; returns the queued job.

        The batch is on durable storage before this returns, so a 202 never loses documents. With
        ``request_digest`` (a request with an Idempotency-Key) the job id derives from it: a run of
        the same request whose earlier run died before it was answered returns that run's job.
        """
        job_id = None
        if request_digest is not None:
            job_id = "job_" + request_digest[:32]
            earlier = await jobs.aget(self.client, job_id)
            if earlier is not None:
                return await self._resume(earlier)
        batch_id = new_batch_id()
        await asyncio.to_thread(put_batch, self.store, collection.ref, batch_id, batch)
        job_id, seq = await self._reserve(collection, job_id)
        payload = tasks.EmbedBatch(
            tenant=collection.tenant,
            collection=collection.name,
            collection_id=collection.id,
            batch_id=batch_id,
            job_id=job_id,
            write_seq=seq,
        )
        job = await self._submit(JobKind.INGEST, count, priority, tasks.EMBED_BATCH, payload, batch_id)
        event = BatchAccepted(
            tenant=collection.tenant,
            collection=collection.name,
            batch_id=batch_id,
            job_id=job.id,
            documents=count,
        )
        await bus.apublish(
            self.client, CloudEvent.wrap(event, source=SOURCE, subject=batch_id), maxlen=self.stream_maxlen
        )
        log.info(
            "batch.accepted",
            batch_id=batch_id,
            job_id=job.id,
            collection=collection.name,
            documents=count,
            priority=priority.value,
        )
        return job

    async def delete_document(
        self, collection: Collection, document_id: str, priority: Priority = Priority.NORMAL
    ) -> Job:
        """Queue the removal of one document; returns the queued job."""
        job_id, seq = await self._reserve(collection)
        payload = tasks.DeleteDocuments(
            tenant=collection.tenant,
            collection=collection.name,
            collection_id=collection.id,
            document_ids=(document_id,),
            job_id=job_id,
            write_seq=seq,
        )
        return await self._submit(JobKind.DELETE, 1, priority, tasks.DELETE_DOCUMENTS, payload)

    async def rollback(
        self, collection: Collection, version: str, documents: int, priority: Priority = Priority.HIGH
    ) -> Job:
        """Queue the publication of earlier version ``version`` as the next one; returns the queued job.

        A rollback is a write: it takes its place in the collection's write order (writes accepted
        before it have no effect after it) and runs on the index queue, ahead of normal work.
        """
        job_id, seq = await self._reserve(collection)
        payload = tasks.RollbackCollection(
            tenant=collection.tenant,
            collection=collection.name,
            collection_id=collection.id,
            version=version,
            job_id=job_id,
            write_seq=seq,
        )
        job = await self._submit(JobKind.ROLLBACK, documents, priority, tasks.ROLLBACK_COLLECTION, payload)
        log.info("rollback.accepted", job_id=job.id, collection=collection.name, version=version)
        return job
