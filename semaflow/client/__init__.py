"""The Python SDK of the semaflow API: a sync :class:`Client` and an :class:`AsyncClient` on httpx, answering with
the same pydantic models the gateway validates and answers with (:mod:`shared.api`), raising one typed error per
problem document, and retrying what is safe to retry (every POST carries an ``Idempotency-Key``)."""

from semaflow.client.aio import AsyncClient
from semaflow.client.base import IngestProgress
from semaflow.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SemaflowError,
    ServerError,
    Timeout,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from semaflow.client.retries import RetryPolicy
from semaflow.client.sync import Client

__all__ = [
    # clients
    "Client",
    "AsyncClient",
    "RetryPolicy",
    "IngestProgress",
    # errors
    "SemaflowError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "ValidationFailed",
    "RateLimited",
    "Unavailable",
    "ServerError",
    "Timeout",
]
