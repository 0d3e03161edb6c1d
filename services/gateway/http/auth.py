"""Authentication and authorisation: a bearer key on every ``/v1`` route, and the role its declaration requires."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace

from services.gateway.appkeys import PRINCIPAL, REDIS, REGISTRY, VERIFIED_KEYS
from services.gateway.http.declarations import endpoint_of
from services.gateway.http.problems import REDIS_DOWN, problem
from shared.errors import NotFound
from shared.records import apikeys, catalog
from shared.records.apikeys import ApiKey
from shared.records.catalog import Collection

log = structlog.get_logger(__name__)


def tenant_of(request: web.Request) -> str:
    """The authenticated key's tenant."""
    return request[PRINCIPAL].tenant


async def collection_of(request: web.Request, *, loaded_if_down: bool = False) -> tuple[Collection, str | None]:
    """The tenant's collection named in the path, and the version its LATEST names (one round trip).

    With ``loaded_if_down`` (reads), a Redis that cannot be reached is answered from the collection's
    loaded index instead: its record as last read, and the version loaded as the latest.

    Raises:
        NotFound: the tenant has no such collection.
        redis.exceptions.ConnectionError: Redis cannot be reached (and nothing is loaded to fall back on).
    """
    name = request.match_info["name"]
    try:
        record, latest = await catalog.get_with_latest(request.app[REDIS], tenant_of(request), name)
    except REDIS_DOWN:
        loaded = request.app[REGISTRY].last_known(tenant_of(request), name) if loaded_if_down else None
        if loaded is None:
            raise
        log.debug("collection.from_loaded_index", collection=name)
        return loaded
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
    record = await bearer_key(request)
    if record is None:
        return unauthorized()
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


async def bearer_key(request: web.Request) -> ApiKey | None:
    """The key ``Authorization: Bearer KEY`` names, verified; None without one, or for one that is not valid.

    Raises:
        redis.exceptions.ConnectionError: Redis cannot be reached and the key was not confirmed lately.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return await _verified(request.app, token.strip())


def unauthorized() -> web.Response:
    """The 401 problem of a request without a valid key."""
    response = problem(401, "A valid API key is required: send 'Authorization: Bearer KEY'.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="semaflow"'
    return response


async def _verified(app: web.Application, key: str) -> ApiKey | None:
    """The key's record from Redis; while Redis cannot be reached, from the keys it confirmed lately.

    Raises:
        redis.exceptions.ConnectionError: Redis cannot be reached and the key was not confirmed lately
            (the request answers 503: whether the key is valid cannot be told now).
    """
    key_hash = apikeys.hash_key(key)
    verified = app[VERIFIED_KEYS]
    try:
        record = await apikeys.lookup(app[REDIS], key)
    except REDIS_DOWN:
        remembered = verified.recall(key_hash)
        if remembered is None:
            raise
        return remembered
    if record is None:
        verified.refused(key_hash)
    else:
        verified.confirmed(key_hash, record)
    return record
