"""What the sync and the async client share: where the API is, how a call becomes a request, how an answer
becomes a result or an error, and which failures are worth another attempt."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import httpx

from semaflow.client import errors
from semaflow.client.calls import Call, DocumentLike
from semaflow.client.retries import RETRY_STATUSES, RetryPolicy, parse_retry_after
from shared.api.schemas import IngestAccepted
from shared.records.jobs import FINISHED, Job

T = TypeVar("T")

#: Documents per ingest request unless told otherwise (the gateway takes at most 1,000).
DEFAULT_BATCH_SIZE = 500
#: The longest a job's long poll holds the answer back (the gateway's own limit).
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class IngestProgress:
    """Where an ``ingest`` stands after a batch was accepted."""

    batches: int
    documents: int
    accepted: IngestAccepted


class ClientBase:
    """Settings and request plumbing shared by :class:`~semaflow.client.Client` and ``AsyncClient``."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.user_agent = f"semaflow-python/{_version()}"

    def _headers(self, call: Call[Any]) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key:
            headers["Idempotency-Key"] = call.idempotency_key
        return headers

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        """Keyword arguments of ``httpx``'s ``request`` for one attempt of ``call``."""
        return {
            "method": call.method,
            "url": self.url + call.path,
            "params": dict(call.params),
            "content": call.body,
            "headers": self._headers(call),
            "timeout": self.timeout_s + call.held_s,
        }

    @staticmethod
    def _result(call: Call[T], response: httpx.Response) -> T:
        """The parsed answer, or the error it stands for.

        Raises:
            SemaflowError: the answer is an error (a subclass by its status).
        """
        if response.status_code < 400:
            return call.parse(response.content)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise errors.from_response(response.status_code, response.content, retry_after)

    @staticmethod
    def _retryable(call: Call[Any], error: errors.SemaflowError) -> bool:
        if error.status in RETRY_STATUSES:
            return True
        # The same Idempotency-Key while its first request still runs: 409 with Retry-After, try again then.
        return error.status == 409 and bool(call.idempotency_key) and error.retry_after is not None

    def _next_delay(self, attempt: int, started: float, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when the policy allows no more."""
        delay = self.retry.delay(attempt - 1, retry_after)
        return delay if self.retry.allows(attempt, started, delay) else None

    @staticmethod
    def _unreachable(exc: httpx.TransportError) -> errors.Unavailable:
        return errors.Unavailable(0, "Unreachable", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _version() -> str:
    try:
        return metadata.version("semaflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def batches(documents: Iterable[DocumentLike], size: int) -> Iterator[Sequence[DocumentLike]]:
    """``documents`` in lists of ``size`` (the last one shorter), read lazily."""
    if not 1 <= size <= 1000:
        raise ValueError("batch_size must be between 1 and 1000")
    chunk: list[DocumentLike] = []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def job_id_of(job: str | Job | IngestAccepted) -> str:
    """The id of a job given by id, as a Job, or as an ingest's answer."""
    if isinstance(job, Job):
        return job.id
    if isinstance(job, IngestAccepted):
        return job.job_id
    return job


def finished(job: Job) -> bool:
    """Whether the job reached a final state (succeeded, failed, cancelled or dead)."""
    return job.state in FINISHED


def wait_slice(deadline: float | None) -> float:
    """The long-poll of the next ``GET /v1/jobs/{id}?wait=``: the time left, at most the gateway's limit.

    Raises:
        Timeout: no time is left.
    """
    if deadline is None:
        return MAX_WAIT_S
    left = deadline - time.monotonic()
    if left <= 0:
        raise errors.Timeout(0, "Timeout", "the job did not finish in time")
    return min(MAX_WAIT_S, max(0.1, left))
