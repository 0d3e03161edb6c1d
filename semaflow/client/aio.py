"""The asynchronous (asyncio) client of the semaflow API: the same methods as :class:`~semaflow.client.Client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx

from semaflow.client import calls
from semaflow.client.base import (
    DEFAULT_BATCH_SIZE,
    ClientBase,
    IngestProgress,
    batches,
    finished,
    job_id_of,
    wait_slice,
)
from semaflow.client.calls import Call, DocumentLike
from semaflow.client.errors import SemaflowError
from semaflow.client.retries import RetryPolicy
from shared.api.schemas import (
    CollectionInfo,
    DocumentRecord,
    DocumentSummary,
    IngestAccepted,
    JobPage,
    Matched,
    Queues,
    RollbackAccepted,
    SearchResponse,
    TriggerAccepted,
)
from shared.api.webhooks import DeliveryPage, Replayed, Webhook, WebhookDelivery, WebhookWithSecret
from shared.records.deadletters import DeadLetter
from shared.records.jobs import Job
from shared.records.schedule_state import ScheduleView
from shared.records.tenants import TenantProfile

T = TypeVar("T")


class AsyncClient(ClientBase):
    """The semaflow API over HTTP: typed answers, typed errors, retries, and an Idempotency-Key on every POST.

    Use it as an async context manager (or await :meth:`close`)::

        async with AsyncClient("http://127.0.0.1:8080", api_key) as sf:
            await sf.create_collection("papers")
            jobs = await sf.ingest([{"id": "a", "text": "..."}], "papers")
            await sf.wait(jobs[-1])
            hits = await sf.search("papers", "query text", k=5)
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, api_key, retry=retry, timeout_s=timeout_s)
        self._http = http or httpx.AsyncClient()

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def send(self, call: Call[T]) -> T:
        """Run one call, retrying what the retry policy allows; POSTs keep one Idempotency-Key across attempts.

        Raises:
            SemaflowError: the API answered an error (a subclass by status), or could not be reached
                (``Unavailable`` with status 0) within the policy's attempts and time.
        """
        call = call.with_key()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                delay = self._next_delay(attempt, started, None)
                if delay is None:
                    raise self._unreachable(exc) from exc
            else:
                try:
                    return self._result(call, response)
                except SemaflowError as error:
                    delay = self._next_delay(attempt, started, error.retry_after)
                    if delay is None or not self._retryable(call, error):
                        raise
            await asyncio.sleep(delay)

    # --- collections --------------------------------------------------------------------------

    async def list_collections(self) -> list[CollectionInfo]:
        """The tenant's collections."""
        return (await self.send(calls.list_collections())).collections

    async def create_collection(self, name: str, quantization: str | None = None) -> CollectionInfo:
        """Create a collection, or confirm it exists; ``quantization`` ``"int8"`` stores its vectors as int8 codes.

        Raises:
            Conflict: it exists with another ``quantization`` (409).
        """
        return await self.send(calls.create_collection(name, quantization))

    async def get_collection(self, name: str) -> CollectionInfo:
        """A collection's size, live index version and index statistics."""
        return await self.send(calls.get_collection(name))

    async def stats(self, name: str) -> CollectionInfo:
        """A collection's statistics (the same answer as :meth:`get_collection`; ``stats`` holds the index's)."""
        return await self.get_collection(name)

    async def delete_collection(self, name: str) -> None:
        """Delete a collection (its objects are removed in the background)."""
        await self.send(calls.delete_collection(name))

    async def rollback(self, name: str, version: str, *, idempotency_key: str | None = None) -> RollbackAccepted:
        """Publish an earlier index version's content again (admin)."""
        return await self.send(calls.rollback(name, version, idempotency_key))

    # --- documents and search -----------------------------------------------------------------

    async def ingest_batch(
        self,
        collection: str,
        documents: Sequence[DocumentLike],
        *,
        priority: str | None = None,
        idempotency_key: str | None = None,
    ) -> IngestAccepted:
        """Send one batch (at most 1,000 documents); answered once it is stored durably."""
        return await self.send(calls.ingest_batch(collection, documents, priority, idempotency_key))

    async def ingest(
        self,
        documents: Iterable[DocumentLike],
        collection: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        priority: str | None = None,
        on_progress: Callable[[IngestProgress], None] | None = None,
    ) -> list[IngestAccepted]:
        """Send any number of documents, ``batch_size`` per request, read lazily; returns each batch's job."""
        accepted: list[IngestAccepted] = []
        sent = 0
        for batch in batches(documents, batch_size):
            answer = await self.ingest_batch(collection, batch, priority=priority)
            accepted.append(answer)
            sent += len(batch)
            if on_progress is not None:
                on_progress(IngestProgress(len(accepted), sent, answer))
        return accepted

    async def delete_document(self, collection: str, doc_id: str) -> IngestAccepted:
        """Queue a document's deletion."""
        return await self.send(calls.delete_document(collection, doc_id))

    async def get_document(
        self, collection: str, doc_id: str, *, include: Iterable[str] | None = None
    ) -> DocumentRecord:
        """One document as the published index holds it: text, metadata (``include=["vector"]``: its vector)."""
        return await self.send(calls.get_document(collection, doc_id, include))

    async def list_documents(self, collection: str, *, limit: int | None = None) -> AsyncIterator[DocumentSummary]:
        """Every document of a collection (id and metadata) in id order, page after page through the cursors."""
        cursor: str | None = None
        while True:
            page = await self.send(calls.list_documents(collection, cursor, limit))
            for doc in page.documents:
                yield doc
            cursor = page.next_cursor
            if not cursor:
                return

    async def search(
        self,
        collection: str,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        include: Iterable[str] | None = None,
    ) -> SearchResponse:
        """The top ``k`` documents for a query text or a vector, best first."""
        return await self.send(calls.search(collection, query, vector, k, filter, include))

    # --- jobs ---------------------------------------------------------------------------------

    async def get_job(self, job: str | Job | IngestAccepted) -> Job:
        """A job as it is now."""
        return await self.send(calls.get_job(job_id_of(job)))

    async def wait(self, job: str | Job | IngestAccepted, timeout_s: float | None = None) -> Job:
        """Wait until the job finished (long-polling ``GET /v1/jobs/{id}?wait=``); returns it, whatever its outcome.

        Raises:
            Timeout: it had not finished after ``timeout_s``.
        """
        job_id = job_id_of(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        current = await self.get_job(job_id)
        while not finished(current):
            current = await self.send(calls.get_job(job_id, wait_slice(deadline)))
        return current

    async def wait_all(self, jobs: Iterable[str | Job | IngestAccepted], timeout_s: float | None = None) -> list[Job]:
        """Wait for every job in turn, within one ``timeout_s`` for them all."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return [await self.wait(j, None if deadline is None else max(0.0, deadline - time.monotonic())) for j in jobs]

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        collection: str | None = None,
        priority: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, of a state, collection, priority and creation time when given."""
        call = calls.list_jobs(state, collection, limit, cursor, priority, created_after, created_before)
        return await self.send(call)

    async def iter_jobs(self, *, state: str | None = None, collection: str | None = None) -> AsyncIterator[Job]:
        """Every job (newest first), page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(state=state, collection=collection, limit=500, cursor=cursor)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel_job(self, job: str | Job | IngestAccepted) -> Job:
        """Cancel a job that has not finished."""
        return await self.send(calls.cancel_job(job_id_of(job)))

    async def retry_job(self, job: str | Job | IngestAccepted) -> Job:
        """Queue a failed, cancelled or dead job again."""
        return await self.send(calls.retry_job(job_id_of(job)))

    async def cancel_jobs(self, **criteria: Any) -> Matched:
        """Cancel every job matching the criteria (state, collection, priority, created_after, created_before)."""
        return await self.send(calls.bulk_jobs("cancel", **criteria))

    async def retry_jobs(self, **criteria: Any) -> Matched:
        """Retry every job matching the criteria (state, collection, priority, created_after, created_before)."""
        return await self.send(calls.bulk_jobs("retry", **criteria))

    # --- dead letters and queues --------------------------------------------------------------

    async def list_dead_letters(
        self,
        *,
        queue: str | None = None,
        collection: str | None = None,
        job_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, newest first (every page unless ``cursor`` or ``limit`` asks for one)."""
        if cursor is not None or limit is not None:
            return (await self.send(calls.list_dead_letters(queue, collection, job_id, limit, cursor))).dead_letters
        out: list[DeadLetter] = []
        while True:
            page = await self.send(calls.list_dead_letters(queue, collection, job_id, 500, cursor))
            out.extend(page.dead_letters)
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter."""
        return await self.send(calls.get_dead_letter(letter_id))

    async def replay_dead_letter(self, letter_id: str) -> Replayed:
        """Queue a dead letter's work again (the letter is removed); returns the job, delivery or mail."""
        return await self.send(calls.replay_dead_letter(letter_id))

    async def replay_dead_letters(self, **criteria: Any) -> Matched:
        """Replay every dead letter matching the criteria (queue, collection, job_id, failed_after, failed_before)."""
        return await self.send(calls.replay_dead_letters(**criteria))

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Drop a dead letter."""
        await self.send(calls.delete_dead_letter(letter_id))

    async def queues(self) -> Queues:
        """Every work queue's statistics (admin)."""
        return await self.send(calls.queues())

    # --- webhooks -----------------------------------------------------------------------------

    async def create_webhook(
        self, url: str, event_types: Sequence[str], *, description: str | None = None, disabled: bool | None = None
    ) -> WebhookWithSecret:
        """Subscribe an endpoint; the answer carries its signing secret, shown this once."""
        return await self.send(calls.create_webhook(url, event_types, description, disabled))

    async def list_webhooks(self) -> list[Webhook]:
        """The tenant's webhook endpoints."""
        return (await self.send(calls.list_webhooks())).webhooks

    async def get_webhook(self, endpoint_id: str) -> Webhook:
        """One webhook endpoint."""
        return await self.send(calls.get_webhook(endpoint_id))

    async def update_webhook(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        disabled: bool | None = None,
    ) -> Webhook:
        """Change an endpoint's URL, event types, description or state."""
        changes = {"url": url, "event_types": event_types, "description": description, "disabled": disabled}
        return await self.send(calls.update_webhook(endpoint_id, **changes))

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Remove an endpoint; its waiting deliveries are dropped."""
        await self.send(calls.delete_webhook(endpoint_id))

    async def rotate_webhook_secret(self, endpoint_id: str) -> WebhookWithSecret:
        """A new signing secret (the old one keeps signing for 24 h)."""
        return await self.send(calls.rotate_webhook_secret(endpoint_id))

    async def test_webhook(self, endpoint_id: str) -> WebhookDelivery:
        """Send a ``webhook.test`` event to the endpoint; returns its delivery."""
        return await self.send(calls.test_webhook(endpoint_id))

    async def list_deliveries(
        self,
        endpoint_id: str,
        *,
        state: str | None = None,
        event_type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DeliveryPage:
        """One page of an endpoint's deliveries, newest first."""
        return await self.send(calls.list_deliveries(endpoint_id, state, event_type, limit, cursor))

    async def replay_webhook(self, endpoint_id: str, since: datetime, until: datetime | None = None) -> Matched:
        """Send every stored event the endpoint subscribes to again, from ``since``."""
        return await self.send(calls.replay_webhook(endpoint_id, since, until))

    async def get_delivery(self, delivery_id: str) -> WebhookDelivery:
        """One delivery with its attempts."""
        return await self.send(calls.get_delivery(delivery_id))

    async def retry_delivery(self, delivery_id: str) -> WebhookDelivery:
        """Start a delivery again with a fresh set of attempts."""
        return await self.send(calls.retry_delivery(delivery_id))

    async def tenant(self) -> TenantProfile:
        """The tenant's profile."""
        return await self.send(calls.get_tenant())

    # --- schedules ----------------------------------------------------------------------------

    async def list_schedules(self) -> list[ScheduleView]:
        """Every schedule with its next and last run (admin)."""
        return (await self.send(calls.list_schedules())).schedules

    async def trigger_schedule(self, name: str) -> TriggerAccepted:
        """Fire a schedule once, now (admin)."""
        return await self.send(calls.trigger_schedule(name))

    async def pause_schedule(self, name: str) -> ScheduleView:
        """Pause a schedule (admin)."""
        return await self.send(calls.pause_schedule(name, True))

    async def resume_schedule(self, name: str) -> ScheduleView:
        """Resume a paused schedule (admin)."""
        return await self.send(calls.pause_schedule(name, False))
