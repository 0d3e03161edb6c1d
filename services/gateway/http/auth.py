"""Authentication and authorisation: a bearer key on every ``/v1`` route, and the role its declaration requires."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace

from services.gateway.appkeys import PRINCIPAL, REDIS
from services.gateway.http.declarations import endpoint_of
from services.gateway.http.problems import problem
from shared.errors import NotFound
from shared.records import apikeys, catalog
from shared.records.catalog import Collection


def tenant_of(request: web.Request) -> str:
    """The authenticated key's tenant."""
    return request[PRINCIPAL].tenant


async def collection_of(request: web.Request) -> tuple[Collection, str | None]:
    """The tenant's collection named in the path, and the version its LATEST names (one round trip).

    Raises:
        NotFound: the tenant has no such collection.
    """
    name = request.match_info["name"]
    record, latest = await catalog.get_with_latest(request.app[REDIS], tenant_of(request), name)
    if record is None:
        raise NotFound(f"collection {name!r} does not exist")
    return record, latest


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require ``Authorization: Bearer KEY`` on ``/v1`` (401), and the route's role (403)."""
    endpoint = endpoint_of(request)
    if endpoint is not None and endpoint.role is None:
        return await handler(request)
    if endpoint is None and not request.path.startswith("/v1/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    record = None
    if scheme.lower() == "bearer" and token.strip():
        record = await apikeys.lookup(request.app[REDIS], token.strip())
    if record is None:
        response = problem(401, "A valid API key is required: send 'Authorization: Bearer KEY'.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="semaflow"'
        return response
    request[PRINCIPAL] = record
    # Every log line and the trace of this request name the tenant (never the key itself).
    structlog.contextvars.bind_contextvars(tenant=record.tenant)
    trace.get_current_span().set_attribute("semaflow.tenant", record.tenant)
    # No declaration: an unknown path or method; the router's 404 or 405 follows.
    if endpoint is not None and endpoint.role is not None and not record.role.allows(endpoint.role):
        return problem(
            403, f"This route needs a key with the {endpoint.role.value} role; this key is a {record.role.value}."
        )
    return await handler(request)
