"""What each API operation sends and how its answer is read, for the sync and the async client alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import orjson
from pydantic import BaseModel

from shared.api.schemas import (
    CollectionInfo,
    CollectionList,
    DeadLetterPage,
    DocumentPage,
    DocumentRecord,
    IngestAccepted,
    IngestDocument,
    JobPage,
    Matched,
    Queues,
    RollbackAccepted,
    ScheduleList,
    SearchResponse,
    TriggerAccepted,
)
from shared.api.webhooks import DeliveryPage, Replayed, Webhook, WebhookDelivery, WebhookList, WebhookWithSecret
from shared.records.deadletters import DeadLetter
from shared.records.jobs import Job
from shared.records.schedule_state import ScheduleView
from shared.records.tenants import TenantProfile

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: A document to ingest: an IngestDocument, or a mapping with its fields (``id``, ``text``, ``metadata``…).
DocumentLike = IngestDocument | Mapping[str, Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the API and the reader of its answer's body."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # POSTs carry one (generated unless given), the same on every retry, so a retried write is done once.
    idempotency_key: str | None = None
    # Seconds the server may hold the answer back on purpose (a long poll), beyond the usual timeout.
    held_s: float = 0.0

    def with_key(self) -> Call[T]:
        """This call with an ``Idempotency-Key`` when it is a POST without one."""
        if self.method != "POST" or self.idempotency_key is not None:
            return self
        return Call(self.method, self.path, self.parse, self.params, self.body, new_idempotency_key(), self.held_s)


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key``."""
    return f"sdk-{uuid.uuid4().hex}"


def _model(model: type[M]) -> Callable[[bytes], M]:
    return model.model_validate_json


def _nothing(_raw: bytes) -> None:
    return None


def _json(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def _body(payload: Mapping[str, Any]) -> bytes:
    # orjson: byte-for-byte the same output for the same input, which a replayed Idempotency-Key needs. Values
    # JSON has no type for (a Decimal or bytes read from a Parquet file, say) travel as their text.
    return orjson.dumps(payload, default=str)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else str(getattr(value, "value", value))
    return out


def _filter(**values: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items() if v is not None}


def document_json(doc: DocumentLike) -> dict[str, Any]:
    """A document as the ingest body carries it."""
    if isinstance(doc, IngestDocument):
        return doc.model_dump(mode="json", exclude_none=True)
    return dict(doc)


# --- collections ------------------------------------------------------------------------------


def list_collections() -> Call[CollectionList]:
    return Call("GET", "/v1/collections", _model(CollectionList))


def create_collection(name: str, quantization: str | None = None) -> Call[CollectionInfo]:
    body = _body({"quantization": quantization}) if quantization is not None else None
    return Call("PUT", f"/v1/collections/{_seg(name)}", _model(CollectionInfo), body=body)


def get_collection(name: str) -> Call[CollectionInfo]:
    return Call("GET", f"/v1/collections/{_seg(name)}", _model(CollectionInfo))


def delete_collection(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/collections/{_seg(name)}", _nothing)


def rollback(name: str, version: str, idempotency_key: str | None = None) -> Call[RollbackAccepted]:
    body = _body({"version": version})
    return Call("POST", f"/v1/collections/{_seg(name)}/rollback", _model(RollbackAccepted), body=body,
                idempotency_key=idempotency_key)  # fmt: skip


# --- documents and search ---------------------------------------------------------------------


def ingest_batch(
    collection: str, documents: Sequence[DocumentLike], priority: str | None, idempotency_key: str | None
) -> Call[IngestAccepted]:
    payload: dict[str, Any] = {"documents": [document_json(d) for d in documents]}
    if priority is not None:
        payload["priority"] = priority
    return Call("POST", f"/v1/collections/{_seg(collection)}/documents", _model(IngestAccepted),
                body=_body(payload), idempotency_key=idempotency_key)  # fmt: skip


def delete_document(collection: str, doc_id: str) -> Call[IngestAccepted]:
    return Call("DELETE", f"/v1/collections/{_seg(collection)}/documents/{_seg(doc_id)}", _model(IngestAccepted))


def get_document(collection: str, doc_id: str, include: Iterable[str] | None) -> Call[DocumentRecord]:
    params = _params(include=",".join(include) if include is not None else None)
    return Call("GET", f"/v1/collections/{_seg(collection)}/documents/{_seg(doc_id)}", _model(DocumentRecord),
                params=params)  # fmt: skip


def list_documents(collection: str, cursor: str | None, limit: int | None) -> Call[DocumentPage]:
    params = _params(cursor=cursor, limit=limit)
    return Call("GET", f"/v1/collections/{_seg(collection)}/documents", _model(DocumentPage), params=params)


def search(
    collection: str,
    query: str | None,
    vector: Sequence[float] | None,
    k: int,
    filter: Mapping[str, Any] | None,
    include: Iterable[str] | None,
) -> Call[SearchResponse]:
    if (query is None) == (vector is None):
        raise ValueError("give exactly one of query or vector")
    payload: dict[str, Any] = {"k": k}
    if query is not None:
        payload["query"] = query
    else:
        payload["vector"] = [float(x) for x in vector or ()]
    if filter:
        payload["filter"] = dict(filter)
    if include is not None:
        payload["include"] = list(include)
    # A search changes nothing: it needs no Idempotency-Key to be retried safely.
    return Call("POST", f"/v1/collections/{_seg(collection)}/search", _model(SearchResponse), body=_body(payload),
                idempotency_key="")  # fmt: skip


# --- jobs, dead letters, queues ---------------------------------------------------------------


def get_job(job_id: str, wait_s: float = 0.0) -> Call[Job]:
    params = _params(wait=f"{wait_s:g}") if wait_s > 0 else {}
    return Call("GET", f"/v1/jobs/{_seg(job_id)}", _model(Job), params=params, held_s=wait_s)


def list_jobs(
    state: str | None,
    collection: str | None,
    limit: int | None,
    cursor: str | None,
    priority: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Call[JobPage]:
    params = _params(
        state=state,
        collection=collection,
        priority=priority,
        created_after=created_after.isoformat() if created_after else None,
        created_before=created_before.isoformat() if created_before else None,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/v1/jobs", _model(JobPage), params=params)


def cancel_job(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/cancel", _model(Job))


def retry_job(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/retry", _model(Job))


def bulk_jobs(action: str, **criteria: Any) -> Call[Matched]:
    return Call("POST", f"/v1/jobs:{action}", _model(Matched), body=_body(_filter(**criteria)))


def list_dead_letters(
    queue: str | None, collection: str | None, job_id: str | None, limit: int | None, cursor: str | None
) -> Call[DeadLetterPage]:
    params = _params(queue=queue, collection=collection, job_id=job_id, limit=limit, cursor=cursor)
    return Call("GET", "/v1/dead-letters", _model(DeadLetterPage), params=params)


def get_dead_letter(letter_id: str) -> Call[DeadLetter]:
    return Call("GET", f"/v1/dead-letters/{_seg(letter_id)}", _model(DeadLetter))


def replay_dead_letter(letter_id: str) -> Call[Replayed]:
    return Call("POST", f"/v1/dead-letters/{_seg(letter_id)}/replay", _model(Replayed))


def replay_dead_letters(**criteria: Any) -> Call[Matched]:
    return Call("POST", "/v1/dead-letters:replay", _model(Matched), body=_body(_filter(**criteria)))


def delete_dead_letter(letter_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/dead-letters/{_seg(letter_id)}", _nothing)


def queues() -> Call[Queues]:
    return Call("GET", "/v1/queues", _model(Queues))


# --- webhooks ---------------------------------------------------------------------------------


def create_webhook(
    url: str, event_types: Sequence[str], description: str | None, disabled: bool | None
) -> Call[WebhookWithSecret]:
    body = _body(_filter(url=url, event_types=list(event_types), description=description, disabled=disabled))
    return Call("POST", "/v1/webhooks", _model(WebhookWithSecret), body=body)


def list_webhooks() -> Call[WebhookList]:
    return Call("GET", "/v1/webhooks", _model(WebhookList))


def get_webhook(endpoint_id: str) -> Call[Webhook]:
    return Call("GET", f"/v1/webhooks/{_seg(endpoint_id)}", _model(Webhook))


def update_webhook(endpoint_id: str, **changes: Any) -> Call[Webhook]:
    body = _body({k: v for k, v in changes.items() if v is not None})
    return Call("PATCH", f"/v1/webhooks/{_seg(endpoint_id)}", _model(Webhook), body=body)


def delete_webhook(endpoint_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/webhooks/{_seg(endpoint_id)}", _nothing)


def rotate_webhook_secret(endpoint_id: str) -> Call[WebhookWithSecret]:
    return Call("POST", f"/v1/webhooks/{_seg(endpoint_id)}/rotate-secret", _model(WebhookWithSecret))


def test_webhook(endpoint_id: str) -> Call[WebhookDelivery]:
    return Call("POST", f"/v1/webhooks/{_seg(endpoint_id)}/test", _model(WebhookDelivery))


def list_deliveries(
    endpoint_id: str, state: str | None, event_type: str | None, limit: int | None, cursor: str | None
) -> Call[DeliveryPage]:
    params = _params(state=state, event_type=event_type, limit=limit, cursor=cursor)
    return Call("GET", f"/v1/webhooks/{_seg(endpoint_id)}/deliveries", _model(DeliveryPage), params=params)


def replay_webhook(endpoint_id: str, since: datetime, until: datetime | None) -> Call[Matched]:
    body = _body(_filter(since=since, until=until))
    return Call("POST", f"/v1/webhooks/{_seg(endpoint_id)}/replay", _model(Matched), body=body)


def get_delivery(delivery_id: str) -> Call[WebhookDelivery]:
    return Call("GET", f"/v1/deliveries/{_seg(delivery_id)}", _model(WebhookDelivery))


def retry_delivery(delivery_id: str) -> Call[WebhookDelivery]:
    return Call("POST", f"/v1/deliveries/{_seg(delivery_id)}/retry", _model(WebhookDelivery))


def get_tenant() -> Call[TenantProfile]:
    return Call("GET", "/v1/tenant", _model(TenantProfile))


# --- schedules --------------------------------------------------------------------------------


def list_schedules() -> Call[ScheduleList]:
    return Call("GET", "/v1/schedules", _model(ScheduleList))


def trigger_schedule(name: str) -> Call[TriggerAccepted]:
    return Call("POST", f"/v1/schedules/{_seg(name)}/trigger", _model(TriggerAccepted))


def pause_schedule(name: str, pause: bool) -> Call[ScheduleView]:
    action = "pause" if pause else "resume"
    return Call("POST", f"/v1/schedules/{_seg(name)}/{action}", _model(ScheduleView))
