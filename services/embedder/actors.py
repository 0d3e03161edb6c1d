"""Embedder actor: runs the best waiting ``embed`` entry, then queues its indexing."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage
from opentelemetry.trace import SpanKind

from services.embedder.embedding import embed_stored_batch
from shared.clock import now_ms
from shared.errors import Cancelled
from shared.messaging import bus, dispatch, tasks, tracing
from shared.messaging.events import BatchEmbedded, CloudEvent
from shared.messaging.workqueue import Entry, WorkQueue
from shared.records import activity, catalog, jobs
from shared.records.activity import Activity
from shared.runtime.outcomes import PERMANENT

if TYPE_CHECKING:
    import redis

    from services.embedder.metrics import EmbedMetrics
    from shared.config import Settings
    from shared.index.embedding import Encoder
    from shared.index.storage import ObjectStore

log = structlog.get_logger(__name__)
SOURCE = "semaflow/embedder"


def declare(
    broker: dramatiq.Broker,
    client: redis.Redis,
    store: ObjectStore,
    encoder: Encoder,
    settings: Settings,
    metrics: EmbedMetrics,
) -> None:
    """Declare ``embed_next`` on ``broker``."""
    queue = WorkQueue(
        client,
        tasks.EMBED_QUEUE,
        starve_every=settings.priority_starve_every,
        starve_after_ms=int(settings.priority_starve_after_s * 1000),
        lease_ms=int(settings.worker_dead_after_s * 1000),
    )

    def embed_next(**_: Any) -> None:
        message_id = CurrentMessage.get_current_message().message_id  # type: ignore[union-attr]
        with queue.holding(message_id) as entry:
            if entry is None:
                return  # a spare token: nothing waits
            _op, payload = tasks.parse_op(entry.kwargs)
            assert isinstance(payload, tasks.EmbedBatch)
            structlog.contextvars.bind_contextvars(tenant=entry.tenant, job_id=entry.id, collection=payload.collection)
            attributes = {
                "semaflow.tenant": entry.tenant,
                "semaflow.job_id": entry.id,
                "semaflow.batch_id": payload.batch_id,
            }
            with tracing.span("embed_batch", parent=entry.traceparent, kind=SpanKind.CONSUMER, attributes=attributes):
                embed(payload, entry)
            queue.release(message_id)

    def embed(payload: tasks.EmbedBatch, entry: Entry) -> None:
        """Embed the entry's batch and queue its indexing (nothing for a cancelled job or a deleted collection)."""
        collection = catalog.get(client, payload.tenant, payload.collection)
        if collection is None or collection.id != payload.collection_id:
            jobs.finish(client, payload.job_id, jobs.JobState.FAILED, error="collection was deleted")
            return
        if not jobs.begin(client, payload.job_id, attempt=entry.attempts):
            return  # cancelled (or ended) meanwhile
        started = time.perf_counter()
        try:
            count = embed_stored_batch(
                store,
                encoder,
                collection.ref,
                payload.batch_id,
                should_stop=lambda: jobs.state(client, payload.job_id) is jobs.JobState.CANCELLED,
                on_progress=lambda done: jobs.progress(client, payload.job_id, embedded=done),
            )
        except Cancelled:
            log.info("batch.cancelled", job_id=payload.job_id, batch_id=payload.batch_id)
            return
        metrics.batches.inc()
        metrics.documents.inc(count)
        activity.record(client, Activity.EMBEDDED, count)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        jobs.progress(client, payload.job_id, embedded=count)
        index = tasks.IndexBatch(
            tenant=payload.tenant,
            collection=payload.collection,
            collection_id=payload.collection_id,
            batch_id=payload.batch_id,
            job_id=payload.job_id,
            write_seq=payload.write_seq,
        )
        follow_up = Entry(payload.job_id, entry.tenant, entry.priority, tasks.INDEX_BATCH.kwargs(index), now_ms())
        dispatch.submit(client, broker, tasks.INDEX_QUEUE, follow_up)
        event = BatchEmbedded(
            tenant=payload.tenant,
            collection=payload.collection,
            batch_id=payload.batch_id,
            job_id=payload.job_id,
            documents=count,
        )
        bus.publish(
            client, CloudEvent.wrap(event, source=SOURCE, subject=payload.batch_id), maxlen=settings.stream_maxlen
        )

    tasks.EMBED_NEXT.declare(broker, embed_next, throws=PERMANENT)
