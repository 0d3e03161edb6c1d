"""Bearer-token authentication of ``/v1`` routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.gateway.appkeys import PRINCIPAL, REDIS
from services.gateway.problems import problem
from shared import apikeys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require ``Authorization: Bearer KEY`` on ``/v1``; attach the key's record to the request."""
    if not request.path.startswith("/v1/"):
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
    return await handler(request)
