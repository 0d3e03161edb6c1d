"""HTTP route telling a key who it is: its tenant and role (what a client such as the console may show)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.appkeys import PRINCIPAL
from services.gateway.http.declarations import Endpoints
from services.gateway.http.responses import model_response
from shared.api.schemas import Me
from shared.records.apikeys import Role
from shared.records.ratelimits import Category

identity_routes = Endpoints("identity")


@identity_routes.get("/v1/me", role=Role.READER, limit=Category.SINGLE, responses={200: Me})
async def me(request: web.Request) -> web.Response:
    """The key's id, tenant, role and name (never the key itself)."""
    key = request[PRINCIPAL]
    return model_response(Me(key_id=key.id, tenant=key.tenant, role=key.role, name=key.name))


__all__ = ["identity_routes"]
