"""Accepting writes: store the batch durably, record the job, enqueue the work, announce it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from shared import bus, jobs, keys, tasks
from shared.documents import encode_batch
from shared.events import BatchAccepted, CloudEvent
from shared.jobs import Job, JobKind, JobState

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

    from shared.catalog import Collection
    from shared.documents import Document
    from shared.storage import ObjectStore

log = structlog.get_logger(__name__)
SOURCE = "semaflow/gateway"


def new_batch_id() -> str:
    """Time-ordered, unique batch id (milliseconds since the epoch, then randomness)."""
    return f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:12]}"


class Writes:
    """The gateway's write path, independent of HTTP."""

    def __init__(
        self, client: aioredis.Redis, store: ObjectStore, broker: dramatiq.Broker, *, stream_maxlen: int
    ) -> None:
        self.client = client
        self.store = store
        self.broker = broker
        self.stream_maxlen = stream_maxlen

    async def _new_job(
        self, collection: Collection, kind: JobKind, documents: int, batch_id: str | None
    ) -> tuple[Job, int]:
        seq = int(await self.client.incr(keys.write_seq(collection.tenant, collection.name)))
        stamp = jobs.now()
        job = Job(
            id=jobs.new_job_id(),
            tenant=collection.tenant,
            collection=collection.name,
            kind=kind,
            state=JobState.QUEUED,
            documents=documents,
            batch_id=batch_id,
            created_at=stamp,
            updated_at=stamp,
        )
        await jobs.create(self.client, job)
        return job, seq

    async def ingest(self, collection: Collection, documents: list[Document]) -> Job:
        """Store the batch, then queue its embedding; returns the queued job.

        The batch is on durable storage before this returns, so a 202 never loses documents.
        """
        batch_id = new_batch_id()
        await asyncio.to_thread(self.store.put, collection.ref.batch_key(batch_id), encode_batch(documents))
        job, seq = await self._new_job(collection, JobKind.INGEST, len(documents), batch_id)
        payload = tasks.EmbedBatch(
            tenant=collection.tenant,
            collection=collection.name,
            collection_id=collection.id,
            batch_id=batch_id,
            job_id=job.id,
            write_seq=seq,
        )
        await self._enqueue(job, lambda: tasks.EMBED_BATCH.send(self.broker, payload))
        event = BatchAccepted(
            tenant=collection.tenant,
            collection=collection.name,
            batch_id=batch_id,
            job_id=job.id,
            documents=len(documents),
        )
        await bus.apublish(
            self.client, CloudEvent.wrap(event, source=SOURCE, subject=batch_id), maxlen=self.stream_maxlen
        )
        log.info(
            "batch.accepted", batch_id=batch_id, job_id=job.id, collection=collection.name, documents=len(documents)
        )
        return job

    async def delete_document(self, collection: Collection, document_id: str) -> Job:
        """Queue the removal of one document; returns the queued job."""
        job, seq = await self._new_job(collection, JobKind.DELETE, 1, None)
        payload = tasks.DeleteDocuments(
            tenant=collection.tenant,
            collection=collection.name,
            collection_id=collection.id,
            document_ids=(document_id,),
            job_id=job.id,
            write_seq=seq,
        )
        await self._enqueue(job, lambda: tasks.DELETE_DOCUMENTS.send(self.broker, payload))
        return job

    async def _enqueue(self, job: Job, send: Callable[[], object]) -> None:
        try:
            await asyncio.to_thread(send)
        except Exception as exc:
            # Nothing will ever run this job: say so rather than leave it queued forever.
            await jobs.atransition(self.client, job.id, JobState.FAILED, error=f"enqueue failed: {exc}")
            raise
