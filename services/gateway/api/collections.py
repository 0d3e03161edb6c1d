"""HTTP routes of API v1 collections, documents and search: thin handlers that parse, call one function, and answer."""

from __future__ import annotations

import asyncio
import re
from typing import Final

import structlog
from aiohttp import web
from pydantic import ValidationError

from services.gateway.appkeys import (
    CACHE,
    IDEMPOTENT_REQUEST,
    INGEST_BODIES,
    REDIS,
    REGISTRY,
    SEARCHER,
    SETTINGS,
    STORE,
    WRITES,
)
from services.gateway.http.auth import collection_of, tenant_of
from services.gateway.http.bodies import read_body, read_bytes
from services.gateway.http.declarations import Endpoints, links_to
from services.gateway.http.problems import problem, validation_problem
from services.gateway.http.responses import json_bytes_response, model_response
from services.gateway.search.cache import Level
from services.gateway.search.indexmetrics import stats_info
from shared import keys
from shared.api.schemas import (
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    IngestAccepted,
    IngestRequest,
    SearchRequest,
    SearchResponse,
    VersionInfo,
    VersionListQuery,
    VersionPage,
)
from shared.constants import COLLECTION_NAME_PATTERN
from shared.index import index_stats, manifests
from shared.index.index_stats import IndexStats
from shared.messaging import bus, tasks
from shared.messaging.events import CloudEvent, CollectionDeleted
from shared.records import catalog
from shared.records.apikeys import Role
from shared.records.ratelimits import Category

__all__ = ["routes"]

log = structlog.get_logger(__name__)
routes = Endpoints("collections")
_NAME = re.compile(COLLECTION_NAME_PATTERN)
# What a client does next with a collection it created or confirmed (and with a job it queued).
_COLLECTION_LINKS: Final = links_to(
    "get_collection",
    "delete_collection",
    "ingest",
    "list_documents",
    "delete_document",
    "search",
    "rollback_collection",
    name="$response.body#/name",
)
# A search result leads to its document (the best one, as an OpenAPI link can name only one).
_BEST_RESULT: Final = links_to("get_document", name="$request.path.name", doc_id="$response.body#/results/0/id")
_JOB_LINKS: Final = links_to("get_job", "cancel_job", "retry_job", job_id="$response.body#/job_id")


async def _infos(request: web.Request, records: list[catalog.Collection]) -> list[CollectionInfo]:
    """What the API shows of these collections; their pointers and statistics are read in two round trips."""
    if not records:
        return []
    client = request.app[REDIS]
    latest = await client.mget([keys.latest(r.tenant, r.name) for r in records])
    stats = await index_stats.read_many(client, [(r.tenant, r.name) for r in records])
    return [
        await _info(request, r, keys.text(raw) if raw else None, s)
        for r, raw, s in zip(records, latest, stats, strict=True)
    ]


async def _info(
    request: web.Request, record: catalog.Collection, version: str | None, stats: IndexStats | None
) -> CollectionInfo:
    documents = segments = 0
    if version is not None:
        snapshot = request.app[REGISTRY].get(record.tenant, record.name)
        if snapshot is not None and snapshot.version == version:
            documents, segments = snapshot.documents, len(snapshot.segments)
        else:
            manifest = await asyncio.to_thread(manifests.read, request.app[STORE], record.ref, version)
            documents, segments = manifest.documents, len(manifest.segments)
    return CollectionInfo(
        name=record.name,
        documents=documents,
        index_version=version,
        segments=segments,
        created_at=record.created_at.isoformat(),
        quantization=record.quantization,
        stats=stats_info(stats),
    )


@routes.put(
    "/v1/collections/{name}",
    role=Role.WRITER,
    limit=Category.SINGLE,
    body=CollectionCreate,
    body_required=False,
    responses={200: CollectionInfo, 201: CollectionInfo},
    links={201: _COLLECTION_LINKS, 200: _COLLECTION_LINKS},
)
async def put_collection(request: web.Request) -> web.Response:
    """Create a collection (201), or confirm it exists (200); its settings (the optional body) are fixed at creation.

    A body naming other settings than an existing collection's answers 409 (a setting it leaves out is not asked).
    """
    name = request.match_info["name"]
    if not _NAME.match(name):
        return problem(
            422,
            "Invalid collection name.",
            errors=[
                {"pointer": "/path/name", "detail": f"must match {COLLECTION_NAME_PATTERN}", "type": "string_pattern"}
            ],
        )
    asked = await read_body(request, CollectionCreate) if request.body_exists else None
    quantization = asked.quantization if asked is not None else "none"
    record, created = await catalog.create(request.app[REDIS], tenant_of(request), name, quantization)
    named = asked.model_fields_set if asked is not None else set()
    if not created and "quantization" in named and record.quantization != quantization:
        return problem(
            409,
            f"Collection {name!r} exists with quantization {record.quantization!r}; it is fixed at creation.",
        )
    (info,) = await _infos(request, [record])
    return model_response(info, 201 if created else 200)


@routes.get("/v1/collections", role=Role.READER, limit=Category.SINGLE, responses={200: CollectionList})
async def list_collections(request: web.Request) -> web.Response:
    """The tenant's collections."""
    records = await catalog.alist_all(request.app[REDIS], tenant_of(request))
    return model_response(CollectionList(collections=await _infos(request, records)))


@routes.get("/v1/collections/{name}", role=Role.READER, limit=Category.SINGLE, responses={200: CollectionInfo})
async def get_collection(request: web.Request) -> web.Response:
    """A collection's size and live index version."""
    record, latest = await collection_of(request)
    stats = await index_stats.read(request.app[REDIS], record.tenant, record.name)
    return model_response(await _info(request, record, latest, stats))


@routes.get(
    "/v1/collections/{name}/versions",
    role=Role.READER,
    limit=Category.SINGLE,
    query=VersionListQuery,
    responses={200: VersionPage},
)
async def list_versions(request: web.Request) -> web.Response:
    """The collection's stored index versions, newest first, each with its time and size; cursor pagination."""
    try:
        q = VersionListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    record, latest = await collection_of(request)
    found, cursor = await asyncio.to_thread(
        manifests.versions_page, request.app[STORE], record.ref, limit=q.limit, before=q.cursor
    )
    page = [
        VersionInfo(version=v.version, created_at=v.created_at, bytes=v.bytes, live=v.version == latest) for v in found
    ]
    return model_response(VersionPage(versions=page, next_cursor=cursor))


@routes.delete("/v1/collections/{name}", role=Role.WRITER, limit=Category.SINGLE, responses={204: None})
async def delete_collection(request: web.Request) -> web.Response:
    """Delete a collection: gone from the API at once, its objects removed in the background."""
    record, _ = await collection_of(request)
    client = request.app[REDIS]
    await catalog.delete(client, record)
    request.app[REGISTRY].drop(record.tenant, record.name)
    if CACHE in request.app:
        await request.app[CACHE].forget(record.tenant, record.name)
    writes = request.app[WRITES]
    event = CollectionDeleted(tenant=record.tenant, collection=record.name)
    await bus.apublish(
        client, CloudEvent.wrap(event, source="semaflow/gateway", subject=record.name), maxlen=writes.stream_maxlen
    )
    payload = tasks.DropCollection(tenant=record.tenant, collection=record.name, collection_id=record.id)
    await asyncio.to_thread(tasks.DROP_COLLECTION.send, writes.broker, payload)
    return web.Response(status=204)


@routes.post(
    "/v1/collections/{name}/documents",
    role=Role.WRITER,
    limit=Category.BULK,
    body=IngestRequest,
    responses={202: IngestAccepted},
    links={202: _JOB_LINKS},
)
async def ingest(request: web.Request) -> web.Response:
    """Accept up to 1,000 documents; 202 once they are stored durably."""
    record, _ = await collection_of(request)
    prepared = await request.app[INGEST_BODIES].prepare(await read_bytes(request))
    if prepared.batch is None:
        limit = request.app[SETTINGS].max_documents_per_request
        return problem(
            413,
            f"At most {limit} documents per request; got {prepared.documents}.",
            errors=[{"pointer": "/documents", "detail": f"at most {limit} items", "type": "too_long"}],
        )
    job = await request.app[WRITES].ingest(
        record, prepared.batch, prepared.documents, prepared.priority, request_digest=request.get(IDEMPOTENT_REQUEST)
    )
    return model_response(IngestAccepted(job_id=job.id, batch_id=job.batch_id), 202)


@routes.delete(
    "/v1/collections/{name}/documents/{doc_id}",
    role=Role.WRITER,
    limit=Category.SINGLE,
    responses={202: IngestAccepted},
    links={202: _JOB_LINKS},
)
async def delete_document(request: web.Request) -> web.Response:
    """Queue a document's deletion; it leaves results at the next publish."""
    record, _ = await collection_of(request)
    job = await request.app[WRITES].delete_document(record, request.match_info["doc_id"])
    return model_response(IngestAccepted(job_id=job.id), 202)


@routes.post(
    "/v1/collections/{name}/search",
    role=Role.READER,
    limit=Category.SEARCH,
    body=SearchRequest,
    responses={200: SearchResponse},
    links={200: _BEST_RESULT},
)
async def search(request: web.Request) -> web.Response:
    """Top-k documents for a query text or vector, from the index version live right now.

    Each result carries what `include` names: `metadata` (the default), `text`, `vector`.

    While Redis cannot be reached, a collection this gateway has loaded is still searched (the version
    it holds), for a key it verified within ``SEMAFLOW_KEY_CACHE_TTL_S``. A version published but not
    loaded yet is waited for (up to ``SEMAFLOW_SEARCH_FRESHNESS_WAIT_S``) unless the request says
    ``Cache-Control: max-stale``: then the loaded version answers at once.
    """
    record, latest = await collection_of(request, loaded_if_down=True)
    body = await read_body(request, SearchRequest)
    directives = {d.strip() for d in request.headers.get("Cache-Control", "").lower().split(",")}
    stale_ok = any(d.partition("=")[0].strip() == "max-stale" for d in directives)
    answer, level = await request.app[SEARCHER].search(
        record,
        body,
        latest=None if stale_ok else latest,
        read_cache="no-cache" not in directives,
        store="no-store" not in directives,
    )
    response = json_bytes_response(answer)
    if CACHE in request.app:
        response.headers["Cache-Status"] = _cache_status(level)
    return response


def _cache_status(level: Level) -> str:
    """RFC 9211 ``Cache-Status``: which cache level answered, or that both were passed."""
    return f"semaflow-{level.value}; hit" if level is not Level.MISS else "semaflow; fwd=miss"
