"""HTTP routes of API v1: thin handlers that parse, call one function, and answer."""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import TypeVar

import numpy as np
import structlog
from aiohttp import web
from pydantic import BaseModel

from services.gateway.appkeys import MODEL, PRINCIPAL, REDIS, REGISTRY, SEARCH_POOL, SETTINGS, STORE, WRITES
from services.gateway.problems import problem
from services.gateway.schemas import (
    CollectionInfo,
    IngestAccepted,
    IngestRequest,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from services.gateway.search import search_snapshot
from shared import bus, catalog, keys, manifests, tasks
from shared.apikeys import ApiKey
from shared.constants import COLLECTION_NAME_PATTERN
from shared.documents import normalize
from shared.errors import NotFound
from shared.events import CloudEvent, CollectionDeleted

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)
_NAME = re.compile(COLLECTION_NAME_PATTERN)


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """A pydantic model as a JSON response."""
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json")


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body; 400 for bad JSON, 422 (raised as ValidationError) for bad fields."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="The request body must be a JSON object.")
    return model.model_validate(data)


def tenant_of(request: web.Request) -> str:
    """The authenticated key's tenant."""
    principal: ApiKey = request[PRINCIPAL]
    return principal.tenant


async def _collection(request: web.Request) -> catalog.Collection:
    name = request.match_info["name"]
    found = await catalog.get(request.app[REDIS], tenant_of(request), name)
    if found is None:
        raise NotFound(f"collection {name!r} does not exist")
    return found


async def _info(request: web.Request, record: catalog.Collection) -> CollectionInfo:
    client = request.app[REDIS]
    raw = await client.get(keys.latest(record.tenant, record.name))
    documents = segments = 0
    version = keys.text(raw) if raw else None
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
    )


@routes.put("/v1/collections/{name}")
async def put_collection(request: web.Request) -> web.Response:
    """Create a collection (201), or confirm it exists (200)."""
    name = request.match_info["name"]
    if not _NAME.match(name):
        return problem(
            422,
            "Invalid collection name.",
            errors=[
                {"pointer": "/path/name", "detail": f"must match {COLLECTION_NAME_PATTERN}", "type": "string_pattern"}
            ],
        )
    record, created = await catalog.create(request.app[REDIS], tenant_of(request), name)
    return model_response(await _info(request, record), 201 if created else 200)


@routes.get("/v1/collections")
async def list_collections(request: web.Request) -> web.Response:
    """The tenant's collections."""
    records = await catalog.list_all(request.app[REDIS], tenant_of(request))
    infos = [(await _info(request, r)).model_dump(mode="json") for r in records]
    return web.json_response({"collections": infos})


@routes.get("/v1/collections/{name}")
async def get_collection(request: web.Request) -> web.Response:
    """A collection's size and live index version."""
    return model_response(await _info(request, await _collection(request)))


@routes.delete("/v1/collections/{name}")
async def delete_collection(request: web.Request) -> web.Response:
    """Delete a collection: gone from the API at once, its objects removed in the background."""
    record = await _collection(request)
    client = request.app[REDIS]
    await catalog.delete(client, record)
    request.app[REGISTRY].drop(record.tenant, record.name)
    writes = request.app[WRITES]
    event = CollectionDeleted(tenant=record.tenant, collection=record.name)
    await bus.apublish(
        client, CloudEvent.wrap(event, source="semaflow/gateway", subject=record.name), maxlen=writes.stream_maxlen
    )
    payload = tasks.DropCollection(tenant=record.tenant, collection=record.name, collection_id=record.id)
    await asyncio.to_thread(tasks.DROP_COLLECTION.send, writes.broker, payload)
    return web.Response(status=204)


@routes.post("/v1/collections/{name}/documents")
async def ingest(request: web.Request) -> web.Response:
    """Accept up to 1,000 documents; 202 once they are stored durably."""
    record = await _collection(request)
    body = await read_body(request, IngestRequest)
    limit = request.app[SETTINGS].max_documents_per_request
    if len(body.documents) > limit:
        return problem(
            413,
            f"At most {limit} documents per request; got {len(body.documents)}.",
            errors=[{"pointer": "/documents", "detail": f"at most {limit} items", "type": "too_long"}],
        )
    job = await request.app[WRITES].ingest(record, body.documents, body.priority)
    return model_response(IngestAccepted(job_id=job.id, batch_id=job.batch_id), 202)


@routes.delete("/v1/collections/{name}/documents/{doc_id}")
async def delete_document(request: web.Request) -> web.Response:
    """Queue a document's deletion; it leaves results at the next publish."""
    record = await _collection(request)
    job = await request.app[WRITES].delete_document(record, request.match_info["doc_id"])
    return model_response(IngestAccepted(job_id=job.id), 202)


@routes.post("/v1/collections/{name}/search")
async def search(request: web.Request) -> web.Response:
    """Top-k documents for a query text or vector, from the index version live right now."""
    record = await _collection(request)
    body = await read_body(request, SearchRequest)
    registry = request.app[REGISTRY]
    snapshot = registry.get(record.tenant, record.name)
    if snapshot is None or snapshot.ref != record.ref:
        snapshot = await registry.refresh(record.tenant, record.name)
    if body.vector is not None:
        query = normalize(np.asarray([body.vector], dtype=np.float32))[0]
    else:
        assert body.query is not None
        query = await request.app[MODEL].encode(body.query)
    if snapshot is None or not snapshot.segments:
        return model_response(SearchResponse(results=[], index_version=snapshot.version if snapshot else None))
    pool = request.app[SEARCH_POOL]
    loop = asyncio.get_running_loop()
    hits = await loop.run_in_executor(pool, search_snapshot, snapshot, query, body.k, body.filter or None)
    results = [SearchHit(id=h.id, score=h.score, metadata=h.metadata) for h in hits]
    return model_response(SearchResponse(results=results, index_version=snapshot.version))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis answers and the latest indexes are loaded."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    checks["index"] = "ok" if request.app[REGISTRY].loaded.is_set() else "loading"
    checks["query_model"] = "ok" if request.app[MODEL].ready else "loading"
    ready = checks["redis"] == "ok" and checks["index"] == "ok"
    body = {"status": "ready" if ready else "not ready", "checks": checks, "pid": os.getpid()}
    return web.json_response(body, status=200 if ready else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this process's metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
