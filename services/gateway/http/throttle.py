"""The rate-limit middleware: charges each authenticated request to its key (429 once a window is spent)."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.gateway.appkeys import LIMITER, METRICS, PRINCIPAL, RATE_LIMIT
from services.gateway.http.declarations import endpoint_of
from services.gateway.http.problems import REDIS_DOWN, problem
from shared.records.apikeys import Role

log = structlog.get_logger(__name__)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Charge the request to its key's windows of the route's category; the headers are added on the way out.

    While Redis cannot be reached, a reader's route (a search, a read) goes through uncharged: the
    loaded indexes can answer it, and a limit that cannot be counted is not enforced. Other routes
    need Redis anyway and answer 503.
    """
    limiter = request.app.get(LIMITER)
    endpoint = endpoint_of(request)
    principal = request.get(PRINCIPAL)
    if limiter is None or endpoint is None or endpoint.limit is None or principal is None:
        return await handler(request)
    try:
        decision = await limiter.charge(principal.id, principal.tenant, endpoint.limit)
    except REDIS_DOWN as exc:
        if endpoint.role is not Role.READER:
            raise
        log.warning("rate_limit.skipped", category=endpoint.limit.value, error=str(exc))
        return await handler(request)
    request[RATE_LIMIT] = decision
    if not decision.admitted:
        request.app[METRICS].rate_limited.labels(category=endpoint.limit.value).inc()
        spent = ", ".join(w.policy for w in decision.windows if w.remaining == 0)
        return problem(
            429,
            f"Rate limit exceeded ({spent}); retry in {decision.retry_after_s} seconds.",
            retry_after=decision.retry_after_s,
        )
    return await handler(request)
