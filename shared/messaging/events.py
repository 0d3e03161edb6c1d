"""The CloudEvents 1.0 envelope every event travels in, and one data model per event type."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

from shared import clock
from shared.errors import InvalidInput

SPECVERSION: Final = "1.0"


class EventData(BaseModel):
    """Base of the payload models; ``TYPE`` names the CloudEvents ``type``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    TYPE: ClassVar[str]


class BatchAccepted(EventData):
    """A batch of documents was stored durably and its job queued."""

    TYPE: ClassVar[str] = "document.batch.accepted"
    tenant: str
    collection: str
    batch_id: str
    job_id: str
    documents: int


class BatchEmbedded(EventData):
    """A batch's vectors were written and handed to the indexer."""

    TYPE: ClassVar[str] = "document.batch.embedded"
    tenant: str
    collection: str
    batch_id: str
    job_id: str
    documents: int


class IndexPublished(EventData):
    """A collection's LATEST pointer moved to a new manifest version."""

    TYPE: ClassVar[str] = "index.published"
    tenant: str
    collection: str
    version: str
    documents: int
    segments: int


class CollectionDeleted(EventData):
    """A collection was deleted; its index must be dropped everywhere."""

    TYPE: ClassVar[str] = "collection.deleted"
    tenant: str
    collection: str


class JobSucceeded(EventData):
    """A job finished and its effect is searchable."""

    TYPE: ClassVar[str] = "job.succeeded"
    tenant: str
    collection: str
    job_id: str
    version: str | None = None


class JobFailed(EventData):
    """A job gave up; ``error`` says why."""

    TYPE: ClassVar[str] = "job.failed"
    tenant: str
    collection: str
    job_id: str
    error: str
    dead_letter: str | None = None


class JobCancelled(EventData):
    """A job was cancelled; nothing of it was published."""

    TYPE: ClassVar[str] = "job.cancelled"
    tenant: str
    collection: str
    job_id: str


class ScheduleFired(EventData):
    """A schedule fired (not tenant-scoped): its tick, when it fired, and under which leader's fencing token.

    ``catch_up``: the tick was missed while no scheduler led and fired late under the ``run_once``
    policy; ``manual``: an operator triggered it (``scheduled_for`` is then the request's time).
    """

    TYPE: ClassVar[str] = "schedule.fired"
    schedule: str
    scheduled_for: datetime
    fired_at: datetime
    fencing_token: int
    catch_up: bool = False
    manual: bool = False
    action: str
    run_id: str


class WebhookDeliveryExhausted(EventData):
    """A webhook delivery used up its attempts; it is kept as a dead letter."""

    TYPE: ClassVar[str] = "webhook.delivery.exhausted"
    tenant: str
    endpoint_id: str
    url: str
    delivery_id: str
    event_id: str
    event_type: str
    attempts: int
    last_status: int | None = None
    error: str
    dead_letter: str | None = None


class WebhookEndpointDisabled(EventData):
    """A webhook endpoint was disabled: it answered 410 Gone, or kept failing for too long."""

    TYPE: ClassVar[str] = "webhook.endpoint.disabled"
    tenant: str
    endpoint_id: str
    url: str
    reason: str


class WebhookTest(EventData):
    """A test event, sent on request to one endpoint only."""

    TYPE: ClassVar[str] = "webhook.test"
    tenant: str
    endpoint_id: str
    message: str


EVENT_TYPES: Final[dict[str, type[EventData]]] = {
    m.TYPE: m
    for m in (
        BatchAccepted,
        BatchEmbedded,
        IndexPublished,
        CollectionDeleted,
        JobSucceeded,
        JobFailed,
        JobCancelled,
        ScheduleFired,
        WebhookDeliveryExhausted,
        WebhookEndpointDisabled,
        WebhookTest,
    )
}


def _now() -> datetime:
    return clock.now()


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope (JSON format) with the W3C ``traceparent`` extension."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = SPECVERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    time: datetime = Field(default_factory=_now)
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any]
    traceparent: str | None = None

    @classmethod
    def wrap(cls, data: EventData, *, source: str, subject: str | None = None) -> CloudEvent:
        """Put a typed payload into a new envelope."""
        return cls(source=source, type=data.TYPE, subject=subject, data=data.model_dump(mode="json"))

    def payload(self) -> EventData:
        """Decode ``data`` into the model registered for ``type``.

        Raises:
            InvalidInput: the type is unknown or the data does not match its model.
        """
        model = EVENT_TYPES.get(self.type)
        if model is None:
            raise InvalidInput(f"unknown event type {self.type!r}")
        try:
            return model.model_validate(self.data)
        except ValueError as exc:
            raise InvalidInput(f"invalid {self.type} data: {exc}") from exc

    def encode(self) -> bytes:
        """The envelope as compact JSON bytes."""
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> CloudEvent:
        """Parse an envelope from JSON.

        Raises:
            InvalidInput: the JSON is not a valid envelope.
        """
        try:
            event = cls.model_validate_json(raw)
        except ValueError as exc:
            raise InvalidInput(f"invalid event envelope: {exc}") from exc
        if event.specversion != SPECVERSION:
            raise InvalidInput(f"unsupported specversion {event.specversion!r}")
        return event
