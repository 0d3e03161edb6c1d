"""A trace span around every HTTP request, continuing the client's trace when it sends ``traceparent``."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind

from shared.messaging import tracing


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: everything the request does (logs included) happens inside its span."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.path}
    parent = tracing.from_headers(request.headers)
    with tracing.span(f"{request.method} {route}", parent=parent, kind=SpanKind.SERVER, attributes=attributes) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            tracing.fail(span, f"HTTP {response.status}")
        return response
