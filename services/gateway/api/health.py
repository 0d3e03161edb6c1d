"""Operational routes without a key: liveness, readiness, metrics, and the API's own description."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Final

from aiohttp import web

from services.gateway.appkeys import METRICS, MODEL, REDIS, REGISTRY
from services.gateway.http.auth import bearer_key, unauthorized
from services.gateway.http.declarations import Endpoints, Scope
from services.gateway.http.openapi import ApiDescription
from services.gateway.http.problems import problem
from services.gateway.http.responses import model_response
from shared.api.schemas import Health, Readiness
from shared.records.apikeys import Role

ops_routes = Endpoints("operations")
OPENAPI: Final = web.AppKey("openapi", ApiDescription)
# The docs page runs Swagger UI from this process (no CDN): its own scripts and styles only.
DOCS_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
_DOCS_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>semaflow API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/init.js"></script>
</body>
</html>
"""
_DOCS_INIT: Final = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
"""
_STATIC: Final = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}


@ops_routes.get("/healthz", role=None, limit=None, scope=Scope.PUBLIC, responses={200: Health})
async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return model_response(Health(status="ok"))


@ops_routes.get("/readyz", role=None, limit=None, scope=Scope.PUBLIC, responses={200: Readiness, 503: Readiness})
async def readyz(request: web.Request) -> web.Response:
    """Ready: the latest indexes are loaded and Redis answers.

    ``degraded`` (still 200, so load balancers keep sending searches): the indexes are loaded but Redis
    cannot be reached (searches answer, writes 503) or the object store failed to load a newer version
    (the loaded one answers). 503 while the indexes are still loading, or Redis is down before they are.
    """
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    registry = request.app[REGISTRY]
    checks["index"] = "ok" if registry.loaded.is_set() else "loading"
    checks["object_store"] = "ok" if registry.store_error is None else f"unavailable: {registry.store_error}"
    checks["query_model"] = "ok" if request.app[MODEL].ready else "loading"
    if checks["index"] != "ok":
        status = "not ready"
    elif checks["redis"] != "ok" or checks["object_store"] != "ok":
        status = "degraded"
    else:
        status = "ready"
    body = Readiness(status=status, checks=checks, pid=os.getpid())
    return model_response(body, 503 if status == "not ready" else 200)


@ops_routes.get("/metrics", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, media_type="text/plain")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this gateway's metrics.

    Without a key, the series labelled by tenant or collection are left out; an admin key gets every
    series (as does the internal metrics port). Any other key answers 401 (not valid) or 403 (not admin),
    so a scraper with a wrong credential finds out rather than silently losing series.
    """
    registry = request.app[METRICS]
    private = False
    if "Authorization" in request.headers:
        record = await bearer_key(request)
        if record is None:
            return unauthorized()
        if not record.role.allows(Role.ADMIN):
            return problem(403, f"Every series needs an admin key; this key is a {record.role.value}.")
        private = True
    return web.Response(body=registry.exposition(private=private), headers={"Content-Type": registry.content_type})


@ops_routes.get("/openapi.json", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, in_schema=False)
async def openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.Response(body=request.app[OPENAPI].json(), content_type="application/json")


@ops_routes.get("/docs", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, in_schema=False)
async def docs(request: web.Request) -> web.Response:
    """Interactive API documentation (Swagger UI, served from this process)."""
    return web.Response(text=_DOCS_PAGE, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})


@ops_routes.get(
    "/docs/static/{file}", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, in_schema=False
)
async def docs_static(request: web.Request) -> web.StreamResponse:
    """Swagger UI's script and stylesheet (from the ``swagger-ui-py`` package)."""
    name = request.match_info["file"]
    if name == "init.js":
        return web.Response(text=_DOCS_INIT, content_type="text/javascript")
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.FileResponse(
        swagger_ui_dir() / name, headers={"Content-Type": _STATIC[name], "Cache-Control": "max-age=86400"}
    )


def swagger_ui_dir() -> Path:
    """Where the installed ``swagger-ui-py`` package keeps Swagger UI's files (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise web.HTTPNotFound(text="Swagger UI is not installed (package swagger-ui-py).")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
