"""Indexer actors: thin entry points that parse a payload and call the publisher."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dramatiq
import structlog

from shared import bus, catalog, jobs, tasks
from shared.catalog import Collection
from shared.errors import PermanentError
from shared.events import CloudEvent, IndexPublished, JobSucceeded

if TYPE_CHECKING:
    import redis

    from services.indexer.publishing import Outcome, Publisher

log = structlog.get_logger(__name__)
SOURCE = "semaflow/indexer"


def declare(broker: dramatiq.Broker, client: redis.Redis, publisher: Publisher, *, stream_maxlen: int) -> None:
    """Declare the indexer's actors on ``broker``."""

    def emit(collection: Collection, outcome: Outcome) -> None:
        if outcome.published and outcome.manifest is not None:
            data = IndexPublished(
                tenant=collection.tenant,
                collection=collection.name,
                version=outcome.manifest.version,
                documents=outcome.manifest.documents,
                segments=len(outcome.manifest.segments),
            )
            bus.publish(client, CloudEvent.wrap(data, source=SOURCE, subject=collection.name), maxlen=stream_maxlen)

    def live_collection(tenant: str, name: str, collection_id: str, job_id: str) -> Collection | None:
        found = catalog.get_sync(client, tenant, name)
        if found is None or found.id != collection_id:
            jobs.transition(client, job_id, jobs.JobState.FAILED, error="collection was deleted")
            return None
        return found

    def finish(collection: Collection, job_id: str, outcome: Outcome) -> None:
        emit(collection, outcome)
        if jobs.transition(client, job_id, jobs.JobState.SUCCEEDED, index_version=outcome.version):
            data = JobSucceeded(
                tenant=collection.tenant, collection=collection.name, job_id=job_id, version=outcome.version
            )
            bus.publish(client, CloudEvent.wrap(data, source=SOURCE, subject=job_id), maxlen=stream_maxlen)

    def index_batch(**kwargs: Any) -> None:
        p = tasks.INDEX_BATCH.parse(kwargs)
        if (collection := live_collection(p.tenant, p.collection, p.collection_id, p.job_id)) is None:
            return
        finish(collection, p.job_id, publisher.add_batch(collection, p.batch_id, p.write_seq))

    def delete_documents(**kwargs: Any) -> None:
        p = tasks.DELETE_DOCUMENTS.parse(kwargs)
        if (collection := live_collection(p.tenant, p.collection, p.collection_id, p.job_id)) is None:
            return
        jobs.transition(client, p.job_id, jobs.JobState.RUNNING)
        finish(collection, p.job_id, publisher.delete(collection, p.document_ids, p.write_seq))

    def drop_collection(**kwargs: Any) -> None:
        p = tasks.DROP_COLLECTION.parse(kwargs)
        gone = Collection(tenant=p.tenant, name=p.collection, id=p.collection_id, created_at=datetime.now(UTC))
        publisher.drop(gone)

    tasks.INDEX_BATCH.declare(broker, index_batch, throws=(PermanentError,))
    tasks.DELETE_DOCUMENTS.declare(broker, delete_documents, throws=(PermanentError,))
    tasks.DROP_COLLECTION.declare(broker, drop_collection, throws=(PermanentError,))
