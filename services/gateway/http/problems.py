"""RFC 9457 problem documents, and the one table that maps errors to HTTP statuses."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Final

import redis.exceptions
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from services.gateway.appkeys import SETTINGS
from shared.constants import REDIS_RETRY_AFTER_S
from shared.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    Misdirected,
    ModelUnavailable,
    NotFound,
    SemaflowError,
    TransientError,
)

log = structlog.get_logger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "https://semaflow.dev/problems/"

# Domain errors -> status. Anything not listed is a bug and answers 500 (and is logged).
_STATUS: Final[list[tuple[type[BaseException], int]]] = [
    (BadRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Misdirected, 421),
    (InvalidInput, 422),
    (ModelUnavailable, 503),
    (TransientError, 503),
]
# Redis could not be reached (refused, reset, timed out): the request needed it, so it cannot be answered now.
REDIS_DOWN: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    title: str | None = None,
    **extra: Any,
) -> web.Response:
    """A problem+json response; its type is named for its ``title`` (the status's phrase unless given)."""
    title = title or HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": TYPE_BASE + title.lower().replace(" ", "-").replace("'", ""),
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    if errors:
        body["errors"] = errors
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)


def redis_unavailable() -> web.Response:
    """503 for a request that needs Redis while Redis cannot be reached, with the seconds to wait in ``Retry-After``."""
    response = problem(
        503,
        "Redis, where the gateway keeps keys, collections and jobs, cannot be reached; retry shortly.",
        title="Redis unavailable",
    )
    response.headers["Retry-After"] = str(REDIS_RETRY_AFTER_S)
    return response


def validation_problem(exc: ValidationError, *, root: str = "body") -> web.Response:
    """422 with one entry per invalid field, located by a JSON pointer."""
    errors = [
        {
            "pointer": "/" + "/".join(str(p) for p in err["loc"]) if err["loc"] else "",
            "detail": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return problem(422, f"The request {root} has invalid fields.", errors=errors)


def error_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The problem document for an error a handler raised; None for one that must propagate as it is.

    Call it from an ``except`` block: an unexpected error is logged with its traceback.
    """
    if isinstance(exc, web.HTTPException):
        return _http_problem(request, exc)
    if isinstance(exc, ValidationError):
        return validation_problem(exc)
    if isinstance(exc, REDIS_DOWN):
        log.warning("request.redis_unavailable", path=request.path, error=str(exc), kind=type(exc).__name__)
        return redis_unavailable()
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            if status >= 500:
                log.warning("request.unavailable", path=request.path, error=str(exc), kind=type(exc).__name__)
            return problem(status, str(exc) if isinstance(exc, SemaflowError) else "A dependency is unavailable.")
    log.exception("request.failed", path=request.path)
    return problem(500, "Internal error; it has been logged.")


def _http_problem(request: web.Request, exc: web.HTTPException) -> web.Response | None:
    # A redirect, or an exception that already is a problem document, is its own answer.
    if exc.status < 400 or exc.content_type == PROBLEM_JSON:
        return None
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if exc.status == 413:
        detail = f"The request body exceeds the limit of {request.app[SETTINGS].max_request_bytes} bytes."
    response = problem(exc.status, detail)
    for name in ("Allow", "Retry-After", "WWW-Authenticate"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error (ours, aiohttp's, pydantic's) as problem+json; never leak a traceback."""
    try:
        return await handler(request)
    except Exception as exc:
        response = error_response(request, exc)
        if response is None:
            raise
        return response
