"""Replies to requests aiohttp answers itself, before any application code runs.

A request line or header aiohttp cannot parse (a bad header, an invalid method, TLS on the plain port,
a header over the size limit) is answered by its ``RequestHandler.handle_error``, which builds the reply
without running the app's middlewares or ``on_response_prepare``: it would say ``Server: Python/3.11
aiohttp/3.x`` and echo the offending bytes back as text. aiohttp offers no public hook there (a request
factory or ``handler_args`` cannot replace it), so :func:`install` wraps that one method, process-wide:
the reply becomes a problem document that says ``Server: semaflow``, with the same status, and aiohttp
still logs the error and closes the connection as before.

This leans on a private part of aiohttp. ``tests/integration/contracts/test_aiohttp_parse_errors.py``
sends such requests over a raw socket, so an aiohttp release that renames or bypasses the method fails
that test instead of leaking its version again.
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import Final

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from services.gateway.http.context import SERVER
from services.gateway.http.problems import problem

_MARK: Final = "_semaflow_problem_reply"


def install() -> None:
    """Make aiohttp's own error replies problem documents that say ``Server: semaflow`` (once per process)."""
    original = RequestHandler.handle_error
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def handle_error(
        self: RequestHandler,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own first: it logs the error, and refuses when part of a reply has gone out already.
        original(self, request, status, exc, message)
        return reply(status)

    setattr(handle_error, _MARK, True)
    RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


def reply(status: int) -> web.Response:
    """The problem document that stands in for aiohttp's reply with ``status``; the connection then closes."""
    if status == HTTPStatus.BAD_REQUEST:
        detail = "The request line or headers are not valid HTTP/1.1."
    else:
        detail = HTTPStatus(status).description or HTTPStatus(status).phrase
    response = problem(status, detail)
    response.headers[hdrs.SERVER] = SERVER
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.force_close()
    return response
