"""HTTP routes that read documents back from a collection's published index: one by id, or a page of them."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from pydantic import ValidationError

from services.gateway.appkeys import DOCUMENTS
from services.gateway.http.auth import collection_of
from services.gateway.http.declarations import Endpoints, links_to
from services.gateway.http.problems import validation_problem
from services.gateway.http.responses import json_bytes_response, model_response
from shared.api.schemas import DocumentGetQuery, DocumentListQuery, DocumentPage, DocumentRecord
from shared.records.apikeys import Role
from shared.records.ratelimits import Category

__all__ = ["document_routes"]

document_routes = Endpoints("documents")
# A listed document leads to its full record (the first of the page, as an OpenAPI link can name only one).
_FIRST_LISTED: Final = links_to("get_document", name="$request.path.name", doc_id="$response.body#/documents/0/id")


@document_routes.get(
    "/v1/collections/{name}/documents/{doc_id}",
    role=Role.READER,
    limit=Category.READ,
    query=DocumentGetQuery,
    responses={200: DocumentRecord},
)
async def get_document(request: web.Request) -> web.Response:
    """A document as the collection's published index holds it: its text, metadata and index version.

    `?include=vector` adds its vector as stored (float32, unit length). A document is readable once its
    ingest job has succeeded and until its deletion has; otherwise 404. `text` is null for a document
    sent as a vector only, and for one indexed before segments kept texts.
    """
    try:
        q = DocumentGetQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    record, latest = await collection_of(request, loaded_if_down=True)
    found = await request.app[DOCUMENTS].get(record, latest, request.match_info["doc_id"], vector=q.include == "vector")
    return json_bytes_response(found.model_dump_json(exclude_unset=True).encode())


@document_routes.get(
    "/v1/collections/{name}/documents",
    role=Role.READER,
    limit=Category.READ,
    query=DocumentListQuery,
    responses={200: DocumentPage},
    links={200: _FIRST_LISTED},
)
async def list_documents(request: web.Request) -> web.Response:
    """The collection's documents (id and metadata) in id order, a page at a time.

    Pass each page's `next_cursor` as `cursor` for the next (null: the last page). Pages read from one
    index version hold every document exactly once; if a newer version is published meanwhile, the next
    page continues after the cursor's document in the newer one. A cursor this API did not hand out is a 400.
    """
    try:
        q = DocumentListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    record, latest = await collection_of(request, loaded_if_down=True)
    return model_response(await request.app[DOCUMENTS].listing(record, latest, q.cursor, q.limit))
