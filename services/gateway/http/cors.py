"""Cross-origin requests (CORS): off unless origins are configured; preflights answered before authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

ALLOWED_METHODS: Final = "GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOWED_HEADERS: Final = "Authorization, Content-Type, Idempotency-Key, X-Request-ID, Cache-Control"
EXPOSED_HEADERS: Final = (
    "RateLimit, RateLimit-Policy, Retry-After, X-Request-ID, Location, Idempotent-Replayed, "
    "Idempotent-Secret-Withheld, Cache-Status"
)
PREFLIGHT_MAX_AGE_S: Final = 600


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins may call the API from a browser (``*``: any; none: CORS off)."""

    origins: frozenset[str]

    @classmethod
    def parse(cls, setting: str) -> CorsPolicy:
        """From the comma-separated setting."""
        return cls(frozenset(o.strip().rstrip("/") for o in setting.split(",") if o.strip()))

    def allows(self, origin: str | None) -> bool:
        """Whether a request from ``origin`` may read the answer."""
        return origin is not None and ("*" in self.origins or origin in self.origins)

    def decorate(self, request: web.Request, headers: CIMultiDict[str]) -> None:
        """Add the CORS headers of an actual (non-preflight) response."""
        if not self.origins:
            return
        headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if self.allows(origin):
            assert origin is not None
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS

    def middleware(self) -> Middleware:
        """Answers preflight requests from allowed origins (204); everything else passes."""

        @web.middleware
        async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            is_preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
            if not is_preflight or not self.allows(origin):
                return await handler(request)
            assert origin is not None
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )

        return cors_middleware
