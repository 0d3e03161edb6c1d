"""Operator routes (admin keys only): API keys of any tenant, and tenants' rate limits.

An admin key is an operator's key: it manages keys and limits across tenants, while its data
routes still reach only its own tenant's resources.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from pydantic import ValidationError

from services.gateway.appkeys import PRINCIPAL, REDIS, SETTINGS
from services.gateway.http.bodies import read_body
from services.gateway.http.declarations import Endpoints, Scope, links_to
from services.gateway.http.idempotency import withhold_on_replay
from services.gateway.http.problems import validation_problem
from services.gateway.http.responses import model_response
from shared.api.schemas import KeyCreated, KeyCreateRequest, KeyList, KeyListQuery, RateLimits
from shared.errors import NotFound
from shared.records import apikeys, ratelimits
from shared.records.apikeys import ApiKey, Role
from shared.records.ratelimits import Category, QuotaOverrides, Quotas

log = structlog.get_logger(__name__)
admin_routes = Endpoints("operators")


@admin_routes.post(
    "/v1/keys",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    body=KeyCreateRequest,
    responses={201: KeyCreated},
    links={201: links_to("get_key", "revoke_key", key_id="$response.body#/id")},
)
async def create_key(request: web.Request) -> web.Response:
    """Create an API key for a tenant; the key is in this answer and nowhere else, ever.

    Not even in the stored answer of an `Idempotency-Key` request: a replay of this request with the
    same key answers 201 with the key's record (its `id`, `Location`...) but `key` null, and the header
    `Idempotent-Secret-Withheld: key`. A client that lost the first answer revokes that key and creates another.
    """
    body = await read_body(request, KeyCreateRequest)
    key, record = await apikeys.acreate(request.app[REDIS], body.tenant, body.role, name=body.name)
    log.info("key.created", key_id=record.id, tenant=record.tenant, role=record.role.value, by=request[PRINCIPAL].id)
    response = model_response(KeyCreated(key=key, **record.model_dump()), 201)
    response.headers["Location"] = f"/v1/keys/{record.id}"
    response.headers["Cache-Control"] = "no-store"
    return withhold_on_replay(response, "key")


@admin_routes.get(
    "/v1/keys",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    query=KeyListQuery,
    responses={200: KeyList},
)
async def list_keys(request: web.Request) -> web.Response:
    """Every key's record (never the key), optionally of one tenant, oldest first."""
    try:
        query = KeyListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    return model_response(KeyList(keys=await apikeys.alist_keys(request.app[REDIS], query.tenant)))


async def _key(request: web.Request) -> ApiKey:
    key_id = request.match_info["key_id"]
    record = await apikeys.aget_by_id(request.app[REDIS], key_id)
    if record is None:
        raise NotFound(f"key {key_id!r} does not exist")
    return record


@admin_routes.get(
    "/v1/keys/{key_id}", role=Role.ADMIN, limit=Category.SINGLE, scope=Scope.CLUSTER, responses={200: ApiKey}
)
async def get_key(request: web.Request) -> web.Response:
    """One key's record (never the key)."""
    return model_response(await _key(request))


@admin_routes.delete(
    "/v1/keys/{key_id}", role=Role.ADMIN, limit=Category.SINGLE, scope=Scope.CLUSTER, responses={204: None}
)
async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key: it stops working at once."""
    record = await _key(request)
    if not await apikeys.arevoke(request.app[REDIS], record.id):
        raise NotFound(f"key {record.id!r} does not exist")
    log.info("key.revoked", key_id=record.id, tenant=record.tenant, by=request[PRINCIPAL].id)
    return web.Response(status=204)


async def _limits(request: web.Request, tenant: str) -> RateLimits:
    settings = request.app[SETTINGS]
    defaults = Quotas.from_settings(settings)
    own = await ratelimits.aoverrides(request.app[REDIS], tenant)
    return RateLimits(
        tenant=tenant,
        enabled=settings.rate_limit_enabled,
        defaults=defaults,
        overrides=own,
        effective=ratelimits.effective(defaults, own),
    )


def _tenant(request: web.Request) -> str:
    return apikeys.check_tenant(request.match_info["tenant"])


@admin_routes.get(
    "/v1/tenants/{tenant}/rate-limits",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    responses={200: RateLimits},
)
async def get_rate_limits(request: web.Request) -> web.Response:
    """A tenant's rate limits: the defaults, its own quotas, and those in force."""
    return model_response(await _limits(request, _tenant(request)))


@admin_routes.put(
    "/v1/tenants/{tenant}/rate-limits",
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    body=QuotaOverrides,
    responses={200: RateLimits},
)
async def set_rate_limits(request: web.Request) -> web.Response:
    """Set a tenant's own quotas (a field sent as null returns to the default; 0 means no limit)."""
    tenant = _tenant(request)
    changes = await read_body(request, QuotaOverrides)
    await ratelimits.aupdate(request.app[REDIS], tenant, changes)
    log.info("rate_limits.updated", tenant=tenant, changes=changes.model_dump(exclude_unset=True))
    return model_response(await _limits(request, tenant))
