"""Per-request context: the request id (``X-Request-ID`` in and out), logs and metrics of every request,
and the headers every response carries (security, rate limits, CORS)."""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from services.gateway.appkeys import METRICS, PRINCIPAL, RATE_LIMIT, REQUEST_ID
from services.gateway.http.cors import CorsPolicy

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER: Final = "X-Request-ID"
MAX_REQUEST_ID_LENGTH: Final = 128
# Ids from clients end up in logs: a safe alphabet, no spaces or control characters.
_VALID_ID: Final = re.compile(rf"[A-Za-z0-9._:@/+=-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
HSTS: Final = "max-age=63072000; includeSubDomains"
# An API answer is data, never a page: nothing in it may load or frame anything.
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
# The Server header names the product only: no version of aiohttp or Python for a scanner to match.
SERVER: Final = "semaflow"


def request_id_of(value: str | None) -> str:
    """The client's id when it is acceptable (1–128 safe characters), else a new one."""
    if value is not None and _VALID_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TrustedProxies:
    """Peers whose ``X-Forwarded-Proto`` is believed (a TLS-terminating proxy in front of the gateway)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, setting: str) -> TrustedProxies:
        """From the comma-separated setting of addresses or networks (CIDR)."""
        return cls(tuple(ipaddress.ip_network(p.strip(), strict=False) for p in setting.split(",") if p.strip()))

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` is one of them."""
        if not self.networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def over_tls(self, request: web.Request) -> bool:
        """Whether the client reached us over TLS: directly, or through a trusted proxy that says so."""
        if request.secure:
            return True
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return forwarded == "https" and self.trusts(request.remote)


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id (bound into every log line it causes), then log and count its answer."""
    request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics = request.app[METRICS]
            metrics.requests.labels(route=route, method=request.method, status=str(status)).inc()
            metrics.latency.labels(route=route).observe(elapsed)
            principal = request.get(PRINCIPAL)
            log.info(
                "request.completed",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                tenant=principal.tenant if principal is not None else None,
                key_id=principal.id if principal is not None else None,
            )


def response_decorator(
    cors: CorsPolicy, proxies: TrustedProxies
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The ``on_response_prepare`` hook that adds the headers every response carries."""

    async def decorate(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers[hdrs.SERVER] = SERVER  # in place of aiohttp's, which names its version and Python's
        request_id = request.get(REQUEST_ID)
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", API_CSP)
        if proxies.over_tls(request):
            headers["Strict-Transport-Security"] = HSTS
        decision = request.get(RATE_LIMIT)
        if decision is not None:
            headers.update(decision.headers())
        cors.decorate(request, headers)

    return decorate
