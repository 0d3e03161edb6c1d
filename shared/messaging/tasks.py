"""Dramatiq task contracts: names, queues and payload models, plus helpers to send them.

A service asks another for work through these specs, never by importing it: the sender builds a
:class:`dramatiq.Message` by actor name, the worker that owns the actor declares it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import dramatiq
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from dramatiq import Broker

# Queues per concern, so each service's workers consume only their own work.
EMBED_QUEUE = "embed"
INDEX_QUEUE = "index"
NOTIFY_QUEUE = "notify"
# Periodic upkeep of indexes and storage (compaction, cleanup, statistics), owned by the indexer.
MAINTENANCE_QUEUE = "maintenance"


class TaskPayload(BaseModel):
    """Base of task payloads: immutable references (ids and keys), never document bodies."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=TaskPayload)


@dataclass(frozen=True)
class TaskSpec(Generic[P]):
    """An actor's public contract: its name, queue and payload model."""

    actor_name: str
    queue_name: str
    payload: type[P]

    def message(self, payload: P) -> dramatiq.Message[Any]:
        """A message for this actor carrying ``payload`` as keyword arguments."""
        return dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(),
            kwargs=payload.model_dump(mode="json"),
            options={},
        )

    def send(self, broker: Broker, payload: P, *, delay_ms: int | None = None) -> str:
        """Enqueue the payload; returns the message id."""
        return broker.enqueue(self.message(payload), delay=delay_ms).message_id

    def parse(self, kwargs: dict[str, Any]) -> P:
        """Validate the keyword arguments a worker received."""
        return self.payload.model_validate(kwargs)

    def declare(
        self,
        broker: Broker,
        fn: Callable[..., object],
        *,
        throws: tuple[type[Exception], ...] = (),
        time_limit_s: float | None = None,
    ) -> None:
        """Register ``fn`` as this task's actor on ``broker`` (done by the one service that owns it).

        ``time_limit_s``: how long one run may take before it is interrupted (and retried); None: the
        broker's default (``task_time_limit_s``).
        """
        options: dict[str, Any] = {"throws": throws}
        if time_limit_s is not None:
            options["time_limit"] = int(time_limit_s * 1000)
        dramatiq.actor(actor_name=self.actor_name, queue_name=self.queue_name, broker=broker, **options)(fn)


class EmbedBatch(TaskPayload):
    """Embed the stored batch ``batch_id`` and hand its vectors to the indexer."""

    tenant: str
    collection: str
    collection_id: str
    batch_id: str
    job_id: str
    write_seq: int


class IndexBatch(TaskPayload):
    """Add the embedded batch ``batch_id`` as a segment and publish a new manifest."""

    tenant: str
    collection: str
    collection_id: str
    batch_id: str
    job_id: str
    write_seq: int


class DeleteDocuments(TaskPayload):
    """Tombstone documents and publish a new manifest."""

    tenant: str
    collection: str
    collection_id: str
    document_ids: tuple[str, ...]
    job_id: str
    write_seq: int


class DropCollection(TaskPayload):
    """Remove every stored object of a deleted collection."""

    tenant: str
    collection: str
    collection_id: str


class SendEmail(TaskPayload):
    """Mail the tenant's contact about an event (``kind`` names the template; ``context`` its references)."""

    kind: str
    tenant: str
    context: dict[str, Any]


class MaintenanceRun(TaskPayload):
    """Base of maintenance payloads: the schedule run that asked for it (None: asked directly).

    The actor reports its outcome under ``schedule`` for run ``run_id``, so ``GET /v1/schedules``
    shows whether the last run succeeded.
    """

    schedule: str | None = None
    run_id: str | None = None


class SendDigest(MaintenanceRun):
    """Mail the weekly digest of ``tenant`` (every tenant when None) for ISO ``week`` (default: the last one)."""

    tenant: str | None = None
    week: str | None = None


class SweepDeliveries(MaintenanceRun):
    """Reclaim webhook deliveries whose worker died and start every delivery that is due."""


class RollbackCollection(TaskPayload):
    """Publish the content of the collection's earlier manifest ``version`` as its next version."""

    tenant: str
    collection: str
    collection_id: str
    version: str
    job_id: str
    write_seq: int


class CompactCollections(MaintenanceRun):
    """Merge full size tiers of segments (and rewrite tombstone-heavy ones); a merged segment above the
    approximate threshold is approximate, its recall checked at build.

    ``tenant``/``collection`` narrow it to one tenant or one collection (None: all); ``full``
    merges every segment of a collection into one (a rebuild).
    """

    tenant: str | None = None
    collection: str | None = None
    full: bool = False


class CleanupStore(MaintenanceRun):
    """Delete stored objects older than the retention that nothing live, recent or retryable needs."""

    tenant: str | None = None


class RefreshStats(MaintenanceRun):
    """Recompute every collection's index statistics (vectors, segments, memory bytes, age)."""


class Token(TaskPayload):
    """Run the best waiting entry of the token's queue (see :mod:`shared.messaging.workqueue`)."""


# Work on the embed and index queues travels as work-queue entries plus interchangeable tokens, so
# priority and tenant fairness hold across the whole queue. An entry's ``op`` names its payload.
EMBED_NEXT: TaskSpec[Token] = TaskSpec("embed_next", EMBED_QUEUE, Token)
INDEX_NEXT: TaskSpec[Token] = TaskSpec("index_next", INDEX_QUEUE, Token)
TOKENS: dict[str, TaskSpec[Token]] = {EMBED_QUEUE: EMBED_NEXT, INDEX_QUEUE: INDEX_NEXT}


@dataclass(frozen=True)
class WorkOp(Generic[P]):
    """A kind of work-queue entry: its name (the entry's ``op``), the queue whose tokens run it, its payload."""

    name: str
    queue_name: str
    payload: type[P]

    def kwargs(self, payload: P) -> dict[str, Any]:
        """An entry's keyword arguments: this op's name and ``payload``."""
        return {"op": self.name, **payload.model_dump(mode="json")}


EMBED_BATCH: WorkOp[EmbedBatch] = WorkOp("embed_batch", EMBED_QUEUE, EmbedBatch)
INDEX_BATCH: WorkOp[IndexBatch] = WorkOp("index_batch", INDEX_QUEUE, IndexBatch)
DELETE_DOCUMENTS: WorkOp[DeleteDocuments] = WorkOp("delete_documents", INDEX_QUEUE, DeleteDocuments)
# A rollback is a write: it takes its place in the collection's write order like a delete.
ROLLBACK_COLLECTION: WorkOp[RollbackCollection] = WorkOp("rollback_collection", INDEX_QUEUE, RollbackCollection)
WORK_OPS: dict[str, WorkOp[Any]] = {
    op.name: op for op in (EMBED_BATCH, INDEX_BATCH, DELETE_DOCUMENTS, ROLLBACK_COLLECTION)
}

# Maintenance goes to Dramatiq directly: it has no priority and no tenant to be fair to.
DROP_COLLECTION: TaskSpec[DropCollection] = TaskSpec("drop_collection", INDEX_QUEUE, DropCollection)

# The indexer's periodic upkeep, on its own queue so it never waits behind (or delays) writes.
COMPACT_COLLECTIONS: TaskSpec[CompactCollections] = TaskSpec(
    "compact_collections", MAINTENANCE_QUEUE, CompactCollections
)
CLEANUP_STORE: TaskSpec[CleanupStore] = TaskSpec("cleanup_store", MAINTENANCE_QUEUE, CleanupStore)
REFRESH_STATS: TaskSpec[RefreshStats] = TaskSpec("refresh_stats", MAINTENANCE_QUEUE, RefreshStats)

# The notifier's work: mail, and the periodic delivery sweep and digest. (Webhook attempts are not
# Dramatiq work: the notifier claims them in Redis and runs them on its event loop.)
SEND_EMAIL: TaskSpec[SendEmail] = TaskSpec("send_email", NOTIFY_QUEUE, SendEmail)
SEND_DIGEST: TaskSpec[SendDigest] = TaskSpec("send_digest", NOTIFY_QUEUE, SendDigest)
SWEEP_DELIVERIES: TaskSpec[SweepDeliveries] = TaskSpec("sweep_deliveries", NOTIFY_QUEUE, SweepDeliveries)


# The operation named by the dead letter of a webhook delivery whose attempts ran out (its replay
# queues the delivery again).
DELIVER_WEBHOOK_OP = "deliver_webhook"


def parse_op(kwargs: dict[str, Any]) -> tuple[WorkOp[Any], TaskPayload]:
    """The op and validated payload of an entry's keyword arguments.

    Raises:
        KeyError: the entry names no known op.
        pydantic.ValidationError: its payload does not fit the op.
    """
    data = dict(kwargs)
    op = WORK_OPS[data.pop("op")]
    return op, op.payload.model_validate(data)
