"""Embedder actor: a thin entry point around :func:`embed_stored_batch`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq

from services.embedder.embedding import embed_stored_batch
from shared import bus, catalog, jobs, tasks
from shared.errors import PermanentError
from shared.events import BatchEmbedded, CloudEvent

if TYPE_CHECKING:
    import redis

    from shared.embedding import Encoder
    from shared.storage import ObjectStore

SOURCE = "semaflow/embedder"


def declare(
    broker: dramatiq.Broker, client: redis.Redis, store: ObjectStore, encoder: Encoder, *, stream_maxlen: int
) -> None:
    """Declare ``embed_batch`` on ``broker``."""

    def embed_batch(**kwargs: Any) -> None:
        p = tasks.EMBED_BATCH.parse(kwargs)
        collection = catalog.get_sync(client, p.tenant, p.collection)
        if collection is None or collection.id != p.collection_id:
            jobs.transition(client, p.job_id, jobs.JobState.FAILED, error="collection was deleted")
            return
        jobs.transition(client, p.job_id, jobs.JobState.RUNNING)
        count = embed_stored_batch(store, encoder, collection.ref, p.batch_id)
        tasks.INDEX_BATCH.send(
            broker,
            tasks.IndexBatch(
                tenant=p.tenant,
                collection=p.collection,
                collection_id=p.collection_id,
                batch_id=p.batch_id,
                job_id=p.job_id,
                write_seq=p.write_seq,
            ),
        )
        event = BatchEmbedded(
            tenant=p.tenant, collection=p.collection, batch_id=p.batch_id, job_id=p.job_id, documents=count
        )
        bus.publish(client, CloudEvent.wrap(event, source=SOURCE, subject=p.batch_id), maxlen=stream_maxlen)

    tasks.EMBED_BATCH.declare(broker, embed_batch, throws=(PermanentError,))
