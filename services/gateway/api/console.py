"""The operator console: a static single-page app served from this package, under a strict policy.

The page and its scripts need no key (they hold no data); the app signs in with an API key that it
keeps in the tab's ``sessionStorage`` and sends as ``Authorization: Bearer`` on every API call. Its
files are plain ES modules and CSS, so the policy allows this origin's scripts and styles only: no
inline script or style, no framing, nothing from elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

from services.gateway.http.declarations import Endpoints, Scope

console_routes = Endpoints("console")
CONSOLE_DIR: Final = Path(__file__).resolve().parent.parent / "console"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    # Revalidated on each load: a gateway upgraded in place never serves an old script with a new page.
    "Cache-Control": "no-cache",
}
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Flat file names only: nothing that could name a path outside the console's directory.
_FILE: Final = re.compile(r"^[a-z0-9][a-z0-9-]*\.(?:js|css|svg)$")


def _file(name: str) -> web.StreamResponse:
    path = CONSOLE_DIR / name
    if not path.is_file():
        raise web.HTTPNotFound()
    headers = {**SECURITY_HEADERS, "Content-Type": _TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


@console_routes.get("/console", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, in_schema=False)
async def console_page(request: web.Request) -> web.StreamResponse:
    """The console's page (its app signs in with a key it keeps in the tab's session storage)."""
    return _file("index.html")


@console_routes.get(
    "/console/{file}", role=None, limit=None, scope=Scope.PUBLIC, responses={200: None}, in_schema=False
)
async def console_asset(request: web.Request) -> web.StreamResponse:
    """One of the console's scripts, stylesheets or images."""
    name = request.match_info["file"]
    if not _FILE.match(name):
        raise web.HTTPNotFound()
    return _file(name)


__all__ = ["CONSOLE_DIR", "CSP", "SECURITY_HEADERS", "console_routes"]
