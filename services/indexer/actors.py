"""Indexer actors: run the best waiting ``index`` entry (a batch or a delete) and announce the result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage
from opentelemetry.trace import SpanKind

from services.indexer.compaction import Policy, tier_full
from services.indexer.publishing import SOURCE, announce
from shared import clock, keys
from shared.errors import Cancelled, PermanentError
from shared.messaging import bus, tasks, tracing
from shared.messaging.events import CloudEvent, JobSucceeded
from shared.messaging.workqueue import WorkQueue
from shared.records import catalog, jobs
from shared.records.catalog import Collection
from shared.runtime.outcomes import PERMANENT

if TYPE_CHECKING:
    import redis

    from services.indexer.publishing import Outcome, Publisher
    from shared.config import Settings
    from shared.index.manifests import Manifest

log = structlog.get_logger(__name__)


class Indexer:
    """The indexer's actors' logic, bound to its Redis client, publisher and queue."""

    def __init__(self, broker: dramatiq.Broker, client: redis.Redis, publisher: Publisher, settings: Settings) -> None:
        self.broker = broker
        self.client = client
        self.publisher = publisher
        self.maxlen = settings.stream_maxlen
        self.policy = Policy.from_settings(settings)
        self.compact_on_publish = settings.compaction_on_publish
        self.queued_ttl_s = settings.compaction_time_limit_s
        self.queue = WorkQueue(
            client,
            tasks.INDEX_QUEUE,
            starve_every=settings.priority_starve_every,
            starve_after_ms=int(settings.priority_starve_after_s * 1000),
            lease_ms=int(settings.worker_dead_after_s * 1000),
        )

    def _publish(self, event: JobSucceeded, subject: str) -> None:
        bus.publish(self.client, CloudEvent.wrap(event, source=SOURCE, subject=subject), maxlen=self.maxlen)

    def _queue_compaction(self, collection: Collection, manifest: Manifest) -> None:
        """Queue the collection's compaction when the tier rule has merging to do (once until it runs)."""
        if not self.compact_on_publish or not tier_full(manifest, self.policy):
            return
        flag = keys.compaction_queued(collection.tenant, collection.name)
        # The flag expires, so a queued message lost to a crash cannot block compaction for ever.
        if self.client.set(flag, manifest.version, nx=True, ex=self.queued_ttl_s):
            payload = tasks.CompactCollections(tenant=collection.tenant, collection=collection.name)
            tasks.COMPACT_COLLECTIONS.send(self.broker, payload)
            log.info("compaction.queued", collection=collection.name, version=manifest.version)

    def _finish(self, collection: Collection, job_id: str, outcome: Outcome, documents: int) -> None:
        if outcome.published and outcome.manifest is not None:
            m = outcome.manifest
            self._queue_compaction(collection, m)
            announce(
                self.client,
                collection.tenant,
                collection.name,
                m.version,
                m.documents,
                len(m.segments),
                maxlen=self.maxlen,
            )
        if jobs.finish(self.client, job_id, jobs.JobState.SUCCEEDED, indexed=documents, index_version=outcome.version):
            done = JobSucceeded(
                tenant=collection.tenant, collection=collection.name, job_id=job_id, version=outcome.version
            )
            self._publish(done, job_id)

    def run(self, op: tasks.WorkOp[Any], payload: tasks.TaskPayload, attempt: int = 1) -> None:
        """Apply one entry's batch, delete or rollback and publish the next version.

        Raises:
            Cancelled: the job was cancelled before anything was published.
        """
        if not isinstance(payload, tasks.IndexBatch | tasks.DeleteDocuments | tasks.RollbackCollection):
            raise PermanentError(f"the index queue cannot run {op.name!r}")
        job_id = payload.job_id
        collection = catalog.get(self.client, payload.tenant, payload.collection)
        if collection is None or collection.id != payload.collection_id:
            jobs.finish(self.client, job_id, jobs.JobState.FAILED, error="collection was deleted")
            return
        if not jobs.begin(self.client, job_id, attempt=attempt):
            return  # cancelled (or ended) meanwhile
        if isinstance(payload, tasks.IndexBatch):
            outcome = self.publisher.add_batch(collection, payload.batch_id, payload.write_seq, job_id)
            job = jobs.get(self.client, job_id)
            documents = job.embedded if job is not None else 0
        elif isinstance(payload, tasks.DeleteDocuments):
            outcome = self.publisher.delete(collection, payload.document_ids, payload.write_seq, job_id)
            documents = len(payload.document_ids)
        else:
            outcome = self.publisher.rollback(collection, payload.version, payload.write_seq, job_id)
            documents = outcome.manifest.documents if outcome.published and outcome.manifest else 0
        self._finish(collection, job_id, outcome, documents)

    def index_next(self, **_: Any) -> None:
        """Claim the best waiting entry (or the one this message already holds) and run it."""
        message_id = CurrentMessage.get_current_message().message_id  # type: ignore[union-attr]
        with self.queue.holding(message_id) as entry:
            if entry is None:
                return  # a spare token: nothing waits
            op, payload = tasks.parse_op(entry.kwargs)
            structlog.contextvars.bind_contextvars(tenant=entry.tenant, job_id=entry.id, op=op.name)
            attributes = {"semaflow.tenant": entry.tenant, "semaflow.job_id": entry.id}
            with tracing.span(op.name, parent=entry.traceparent, kind=SpanKind.CONSUMER, attributes=attributes):
                try:
                    self.run(op, payload, entry.attempts)
                except Cancelled as exc:
                    log.info("index.cancelled", job_id=entry.id, reason=str(exc))
            self.queue.release(message_id)

    def drop_collection(self, **kwargs: Any) -> None:
        """Remove every stored object of a deleted collection."""
        p = tasks.DROP_COLLECTION.parse(kwargs)
        gone = Collection(tenant=p.tenant, name=p.collection, id=p.collection_id, created_at=clock.now())
        self.publisher.drop(gone)


def declare(broker: dramatiq.Broker, client: redis.Redis, publisher: Publisher, settings: Settings) -> None:
    """Declare the indexer's actors on ``broker``."""
    indexer = Indexer(broker, client, publisher, settings)
    tasks.INDEX_NEXT.declare(broker, indexer.index_next, throws=PERMANENT)
    tasks.DROP_COLLECTION.declare(broker, indexer.drop_collection, throws=(PermanentError,))
