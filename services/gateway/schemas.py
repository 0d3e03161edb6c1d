"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import constants as c
from shared.documents import Document, check_vector
from shared.jobs import JobState
from shared.workqueue import Priority

JsonScalar = str | int | float | bool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestRequest(_Body):
    """``POST /v1/collections/{name}/documents``."""

    documents: list[Document] = Field(min_length=1)
    priority: Priority = Priority.NORMAL

    @field_validator("documents")
    @classmethod
    def _unique_and_embeddable(cls, docs: list[Document]) -> list[Document]:
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if doc.text is None and doc.vector is None:
                raise ValueError(f"document {i} ({doc.id!r}) needs 'text' or 'vector'")
            if doc.id in seen:
                raise ValueError(f"document id {doc.id!r} appears more than once")
            seen.add(doc.id)
        return docs


class IngestAccepted(_Body):
    """202 answer to an ingest or delete."""

    job_id: str
    batch_id: str | None = None


class SearchRequest(_Body):
    """``POST /v1/collections/{name}/search``: a query text or a vector, top ``k``, exact-match filter."""

    query: str | None = Field(default=None, min_length=1, max_length=c.MAX_TEXT_CHARS)
    vector: list[float] | None = Field(default=None, min_length=c.EMBEDDING_DIM, max_length=c.EMBEDDING_DIM)
    k: int = Field(default=10, ge=1, le=c.MAX_SEARCH_K)
    filter: dict[str, JsonScalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of_query_or_vector(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' or 'vector'")
        return self

    @field_validator("vector")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        return check_vector(value)


class SearchHit(_Body):
    """One result."""

    id: str
    score: float
    metadata: dict[str, Any]


class SearchResponse(_Body):
    """Results, best first, and the index version that answered."""

    results: list[SearchHit]
    index_version: str | None


class CollectionInfo(_Body):
    """A collection as the API shows it."""

    name: str
    documents: int
    index_version: str | None
    segments: int
    created_at: str


class JobListQuery(_Body):
    """``GET /v1/jobs`` query parameters."""

    state: JobState | None = None
    collection: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class JobBulkRequest(_Body):
    """``POST /v1/jobs:cancel`` and ``POST /v1/jobs:retry``: which jobs (at least one criterion)."""

    state: JobState | None = None
    collection: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    @model_validator(mode="after")
    def _some_criterion(self) -> JobBulkRequest:
        if not self.model_fields_set:
            raise ValueError("give at least one of state, collection, priority, created_after, created_before")
        return self


class DeadLetterListQuery(_Body):
    """``GET /v1/dead-letters`` query parameters."""

    queue: str | None = None
    collection: str | None = None
    job_id: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class DeadLetterReplayRequest(_Body):
    """``POST /v1/dead-letters:replay``: which letters (at least one criterion)."""

    queue: str | None = None
    collection: str | None = None
    job_id: str | None = None
    failed_after: datetime | None = None
    failed_before: datetime | None = None

    @model_validator(mode="after")
    def _some_criterion(self) -> DeadLetterReplayRequest:
        if not self.model_fields_set:
            raise ValueError("give at least one of queue, collection, job_id, failed_after, failed_before")
        return self


class Matched(_Body):
    """How many items a bulk operation applied to."""

    matched: int
