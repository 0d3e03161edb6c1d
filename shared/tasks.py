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

    def declare(self, broker: Broker, fn: Callable[..., None], *, throws: tuple[type[Exception], ...] = ()) -> None:
        """Register ``fn`` as this task's actor on ``broker`` (done by the one service that owns it)."""
        dramatiq.actor(actor_name=self.actor_name, queue_name=self.queue_name, broker=broker, throws=throws)(fn)


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


EMBED_BATCH: TaskSpec[EmbedBatch] = TaskSpec("embed_batch", EMBED_QUEUE, EmbedBatch)
INDEX_BATCH: TaskSpec[IndexBatch] = TaskSpec("index_batch", INDEX_QUEUE, IndexBatch)
DELETE_DOCUMENTS: TaskSpec[DeleteDocuments] = TaskSpec("delete_documents", INDEX_QUEUE, DeleteDocuments)
DROP_COLLECTION: TaskSpec[DropCollection] = TaskSpec("drop_collection", INDEX_QUEUE, DropCollection)
