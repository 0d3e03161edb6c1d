"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from shared import constants as c
from shared.index.documents import Document, Vector, check_array, check_vector, needs_one_of
from shared.index.manifests import Quantization
from shared.messaging.workqueue import Priority
from shared.records.apikeys import MAX_NAME_LENGTH, ApiKey, Role
from shared.records.deadletters import DeadLetter
from shared.records.jobs import Job, JobState
from shared.records.ratelimits import Quotas
from shared.records.schedule_state import ScheduleView

JsonScalar = str | int | float | bool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _iso_only(value: object) -> object:
    """A date-time as the schema says it: an ISO 8601 string (pydantic alone would take 0.5 as a Unix time)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value[:4].isdigit() or len(value) < 10 or value[4] != "-":
        raise ValueError("must be an ISO 8601 date-time, such as 2026-12-07T05:00:00Z")
    return value


# A date-time given in a request: an ISO 8601 string, never a number.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


def _exactly_one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema: exactly one of ``fields`` is present and not null."""
    return {"oneOf": needs_one_of(*fields)["anyOf"]}


# A page cursor as the API hands it out: ``{milliseconds}:{id}``.
CURSOR_PATTERN = r"^[0-9]+:.+$"


# JSON Schema of a text that is not blank: it holds a character ``str.strip`` keeps (what _not_blank checks).
NOT_BLANK_PATTERN = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


# A vector as little-endian float32 bytes in base64 (numpy: ``base64.b64encode(v.astype("<f4").tobytes())``).
VECTOR_B64_CHARS = 4 * ((c.EMBEDDING_DIM * 4 + 2) // 3)  # base64 of EMBEDDING_DIM 4-byte floats, with padding
# The alphabet, for the API's schema (decoding refuses anything else itself).
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def decode_vector_b64(value: object) -> object:
    """A ``vector_b64`` string as the little-endian float32 bytes it encodes, checked as a vector is (None stays None).

    The bytes are kept as they came (no list of Python floats is ever made of them): the batch file stores them.

    Raises:
        ValueError: not a base64 string, not of ``EMBEDDING_DIM`` float32 values, or not a usable vector.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:  # validate=True: any character outside the alphabet, or padding inside, is refused
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character
        raise ValueError(f"must be base64 (A-Z, a-z, 0-9, '+', '/', '=' padding): {exc}") from exc
    if len(raw) != c.EMBEDDING_DIM * 4:
        raise ValueError(
            f"must encode {c.EMBEDDING_DIM} float32 values ({c.EMBEDDING_DIM * 4} bytes); got {len(raw)} bytes"
        )
    check_array(np.frombuffer(raw, dtype="<f4"))
    return raw


class IngestDocument(Document):
    """A document as an ingest takes it: a text, when given, is not blank (it would match every query); its vector
    as a JSON array (``vector``) or as base64 float32 bytes (``vector_b64``), not both."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            **needs_one_of("text", "vector", "vector_b64"),
            # Not both (a null one is as good as absent).
            "not": {
                "required": ["vector", "vector_b64"],
                "properties": {"vector": {"type": "array"}, "vector_b64": {"type": "string"}},
            },
        },
    )

    text: str | None = Field(
        default=None, max_length=c.MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK_PATTERN}
    )
    vector_b64: Annotated[
        bytes | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "contentEncoding": "base64",
                        "minLength": VECTOR_B64_CHARS,
                        "maxLength": VECTOR_B64_CHARS,
                        "pattern": _BASE64.pattern,
                    },
                    {"type": "null"},
                ],
                "description": (
                    f"The vector as {c.EMBEDDING_DIM} little-endian float32 values, base64-encoded "
                    "(numpy: base64.b64encode(v.astype('<f4').tobytes())); instead of 'vector'."
                ),
            }
        ),
    ] = Field(default=None, exclude=True)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value)

    @field_validator("vector_b64", mode="before")
    @classmethod
    def _decode_vector_b64(cls, value: object) -> object:
        return decode_vector_b64(value)

    @model_validator(mode="after")
    def _one_vector(self) -> IngestDocument:
        if self.vector is not None and self.vector_b64 is not None:
            raise ValueError("give 'vector' or 'vector_b64', not both")
        return self

    def sent_vector(self) -> np.ndarray[Any, np.dtype[np.float32]] | None:
        """The vector this document came with (``vector`` or ``vector_b64``), as float32."""
        if self.vector_b64 is not None:
            return np.frombuffer(self.vector_b64, dtype="<f4")
        return super().sent_vector()


class IngestRequest(_Body):
    """``POST /v1/collections/{name}/documents``."""

    documents: list[IngestDocument] = Field(min_length=1)
    priority: Priority = Priority.NORMAL

    @field_validator("documents")
    @classmethod
    def _unique_and_embeddable(cls, docs: list[IngestDocument]) -> list[IngestDocument]:
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if doc.text is None and doc.vector is None and doc.vector_b64 is None:
                raise ValueError(f"document {i} ({doc.id!r}) needs 'text', 'vector' or 'vector_b64'")
            if doc.id in seen:
                raise ValueError(f"document id {doc.id!r} appears more than once")
            seen.add(doc.id)
        return docs


class IngestAccepted(_Body):
    """202 answer to an ingest or delete."""

    job_id: str
    batch_id: str | None = None


# What a search result (or a document read) may carry besides its id and score.
Include = Literal["text", "metadata", "vector"]


def _default_include() -> list[Include]:
    return ["metadata"]


class SearchRequest(_Body):
    """``POST /v1/collections/{name}/search``: a query text or a vector, top ``k``, exact-match filter."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_exactly_one_of("query", "vector"))

    query: str | None = Field(
        default=None, min_length=1, max_length=c.MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK_PATTERN}
    )
    vector: Vector | None = Field(default=None, min_length=c.EMBEDDING_DIM, max_length=c.EMBEDDING_DIM)
    k: int = Field(default=10, ge=1, le=c.MAX_SEARCH_K, strict=True)
    filter: dict[str, JsonScalar] = Field(default_factory=dict)
    include: list[Include] = Field(
        default_factory=_default_include,
        max_length=3,
        description=(
            "What each result carries besides its id and score: its text (null for a document sent as a vector "
            "only, or indexed before texts were kept), its metadata, its vector as stored (unit length)."
        ),
    )

    @model_validator(mode="after")
    def _one_of_query_or_vector(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' or 'vector'")
        return self

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value)

    @field_validator("vector")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        return check_vector(value)


class SearchHit(_Body):
    """One result; ``text``, ``metadata`` and ``vector`` are present when the search's ``include`` names them."""

    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    vector: list[float] = Field(default_factory=list)


class SearchResponse(_Body):
    """Results, best first, and the index version that answered."""

    results: list[SearchHit]
    index_version: str | None


class DocumentRecord(_Body):
    """A document as the collection's published index holds it (``vector`` only with ``?include=vector``)."""

    id: str
    text: str | None = Field(
        description="null for a document sent as a vector only, or indexed before texts were kept in segments."
    )
    metadata: dict[str, Any]
    index_version: str
    vector: list[float] = Field(
        default_factory=list, description="The vector as stored: float32, scaled to unit length."
    )


class DocumentGetQuery(_Body):
    """``GET /v1/collections/{name}/documents/{doc_id}`` query parameters."""

    include: Literal["vector"] | None = Field(default=None, description="vector: add the stored vector.")


# A document page cursor: base64url, no padding (it encodes a document id of up to MAX_ID_LENGTH characters).
DOCUMENT_CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
DOCUMENT_CURSOR_MAX = 4 * (1 + 4 * c.MAX_ID_LENGTH + 2) // 3


class DocumentListQuery(_Body):
    """``GET /v1/collections/{name}/documents`` query parameters."""

    cursor: str | None = Field(
        default=None,
        min_length=2,
        max_length=DOCUMENT_CURSOR_MAX,
        pattern=DOCUMENT_CURSOR_PATTERN,
        description="The next_cursor of the previous page (absent: the first page).",
    )
    limit: int = Field(default=c.DOCUMENT_PAGE_DEFAULT, ge=1, le=c.DOCUMENT_PAGE_MAX)


class DocumentSummary(_Body):
    """A listed document."""

    id: str
    metadata: dict[str, Any]


class DocumentPage(_Body):
    """A page of a collection's documents in id order; ``next_cursor`` continues it (null on the last page)."""

    documents: list[DocumentSummary]
    next_cursor: str | None
    index_version: str | None


class IndexStatsInfo(_Body):
    """A collection's index statistics, as of the last statistics run (``computed_at``)."""

    vectors: int
    segments: int
    approximate_segments: int
    quantized_segments: int = Field(default=0, description="Segments holding int8 codes rather than float32 rows.")
    min_recall: float | None = Field(
        default=None,
        description=(
            "Lowest recall@10 against exact float32 search measured when its approximate or int8 segments were"
            " built (null: it has none)."
        ),
    )
    memory_bytes: int
    index_age_seconds: float | None
    version: str | None
    computed_at: datetime


class CollectionInfo(_Body):
    """A collection as the API shows it."""

    name: str
    documents: int
    index_version: str | None
    segments: int
    created_at: str
    quantization: Quantization = Field(
        default="none", description="How its segments hold vectors: `none` (float32) or `int8` (set at creation)."
    )
    stats: IndexStatsInfo | None = None


class CollectionCreate(_Body):
    """``PUT /v1/collections/{name}`` (the body is optional): the collection's settings, fixed at creation."""

    quantization: Quantization = Field(
        default="none",
        description=(
            "`int8` stores each vector as 384 bytes (one per dimension, FAISS scalar quantiser `QT_8bit`) instead of"
            " 1,536: a quarter of the disk and memory. Every segment is checked at build against exact float32"
            " search (recall@10, `SEMAFLOW_MIN_RECALL`) and written as float32 when it falls short; scores and"
            " vectors read back are the decoded (dequantised) ones."
        ),
    )


class RollbackRequest(_Body):
    """``POST /v1/collections/{name}/rollback``: the earlier version to publish again."""

    version: str = Field(pattern=c.VERSION_PATTERN)


class ScheduleList(_Body):
    """``GET /v1/schedules``."""

    schedules: list[ScheduleView]


class TriggerAccepted(_Body):
    """202 answer to a trigger: the leading scheduler fires the schedule once, soon."""

    schedule: str
    requested_at: datetime


class RollbackAccepted(_Body):
    """202 answer to a rollback: its job, and the version whose content it publishes."""

    job_id: str
    version: str


class JobListQuery(_Body):
    """``GET /v1/jobs`` query parameters."""

    state: JobState | None = None
    collection: str | None = None
    priority: Priority | None = None
    created_after: IsoDateTime | None = Field(default=None, description="Only jobs created after this time (ISO 8601).")
    created_before: IsoDateTime | None = Field(
        default=None, description="Only jobs created before this time (ISO 8601)."
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)


class JobGetQuery(_Body):
    """``GET /v1/jobs/{job_id}`` query parameters."""

    wait: float = Field(
        default=0,
        ge=0,
        le=c.MAX_JOB_WAIT_S,
        description=(
            "Seconds to wait for the job to change (its state or its progress) before answering; "
            "the answer comes as soon as it changes, or when the time is up (0: answer at once)."
        ),
    )


class JobBulkRequest(_Body):
    """``POST /v1/jobs:cancel`` and ``POST /v1/jobs:retry``: which jobs (at least one criterion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    state: JobState | None = None
    collection: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    dry_run: bool = Field(default=False, description="Only count the jobs it would apply to now; change nothing.")

    @model_validator(mode="after")
    def _some_criterion(self) -> JobBulkRequest:
        if not self.model_fields_set - {"dry_run"}:
            raise ValueError("give at least one of state, collection, priority, created_after, created_before")
        return self


class DeadLetterListQuery(_Body):
    """``GET /v1/dead-letters`` query parameters."""

    queue: str | None = None
    collection: str | None = None
    job_id: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)


class DeadLetterReplayRequest(_Body):
    """``POST /v1/dead-letters:replay``: which letters (at least one criterion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

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


class CollectionList(_Body):
    """``GET /v1/collections``."""

    collections: list[CollectionInfo]


class JobPage(_Body):
    """A page of jobs, newest first; ``next_cursor`` continues it (null on the last page)."""

    jobs: list[Job]
    next_cursor: str | None


class DeadLetterPage(_Body):
    """A page of dead letters, newest first; ``next_cursor`` continues it (null on the last page)."""

    dead_letters: list[DeadLetter]
    next_cursor: str | None


class QueueStats(_Body):
    """One work queue's statistics."""

    depth: dict[str, int]
    delayed: int
    in_flight: int
    dead: int
    oldest_age_seconds: float
    workers: int
    processed_last_minute: int


class Queues(_Body):
    """``GET /v1/queues``: every work queue's statistics."""

    queues: dict[str, QueueStats]


class KeyCreateRequest(_Body):
    """``POST /v1/keys``: a key for ``tenant`` with ``role`` (default writer), optionally named."""

    tenant: str = Field(pattern=c.TENANT_NAME_PATTERN)
    role: Role = Role.WRITER
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)


class KeyCreated(ApiKey):
    """201 answer to ``POST /v1/keys``: the key itself, shown this once, and its record."""

    key: str | None = Field(
        description="The key itself; null in an Idempotency-Key replay (header Idempotent-Secret-Withheld)."
    )


class KeyList(_Body):
    """``GET /v1/keys``: key records (never the keys), oldest first."""

    keys: list[ApiKey]


class KeyListQuery(_Body):
    """``GET /v1/keys`` query parameters."""

    tenant: str | None = Field(default=None, pattern=c.TENANT_NAME_PATTERN)


class RateLimits(_Body):
    """A tenant's rate limits: the defaults, its own quotas, and what is in force."""

    tenant: str
    enabled: bool
    defaults: Quotas
    overrides: dict[str, int]
    effective: Quotas


class Health(_Body):
    """``GET /healthz``."""

    status: str


class Readiness(_Body):
    """``GET /readyz``: each check's state."""

    status: str
    checks: dict[str, str]
    pid: int


class ProblemField(BaseModel):
    """One invalid field of a request."""

    pointer: str
    detail: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


class Me(_Body):
    """``GET /v1/me``: who the request's key is (never the key itself)."""

    key_id: str
    tenant: str
    role: Role
    name: str | None


class ActivityQuery(_Body):
    """``GET /v1/activity`` query parameters."""

    minutes: int = Field(default=60, ge=1, le=120)


class Activity(_Body):
    """``GET /v1/activity``: finished work per UTC minute, oldest first (the current, partial minute last)."""

    start: datetime = Field(description="The first minute's start.")
    embedded: list[int] = Field(description="Documents embedded in each minute.")
    deliveries: list[int] = Field(description="Webhook attempts finished in each minute.")


class VersionListQuery(_Body):
    """``GET /v1/collections/{name}/versions`` query parameters (``cursor``: the last version of a page)."""

    limit: int = Field(default=20, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{10}-[0-9a-f]{16}$")


class VersionInfo(_Body):
    """One stored index version of a collection."""

    version: str
    created_at: datetime
    bytes: int = Field(description="Size of the version's manifest and of the segments it names, in bytes.")
    live: bool


class VersionPage(_Body):
    """``GET /v1/collections/{name}/versions``: versions, newest first; cursor pagination."""

    versions: list[VersionInfo]
    next_cursor: str | None
