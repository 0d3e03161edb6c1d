"""What the gateway relies on in aiohttp's server beyond its public API, pinned over a raw socket.

aiohttp answers a request it cannot parse itself, in ``RequestHandler.handle_error``, before any of the
app's middlewares or hooks run; :mod:`services.gateway.http.parse_errors` wraps that method so the
reply is a problem document saying ``Server: semaflow``. An aiohttp upgrade that renames the method or
answers such requests some other way fails here instead of naming its version to every scanner.
"""

from __future__ import annotations

import asyncio
import json
from email.parser import BytesHeaderParser

import pytest

from tests.integration.gateway.conftest import Api, Client

UNPARSABLE = {
    "a header line without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "an invalid method": b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header over the size limit": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
    "a Content-Length that is not a number": b"POST /v1/collections HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "TLS on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32 + b"\r\n\r\n",
}


async def _raw(client: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the reply's status, headers and body (read until the server closes)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    headers = BytesHeaderParser().parsebytes(header_block)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_bytes", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_a_request_aiohttp_cannot_parse_gets_a_problem_that_names_no_version(
    api: Api, request_bytes: bytes
) -> None:
    status, headers, body = await _raw(api.client, request_bytes)

    assert status == 400
    assert headers["server"] == "semaflow"
    assert headers["content-type"] == "application/problem+json; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    problem = json.loads(body)
    assert (problem["status"], problem["title"]) == (400, "Bad Request")
    everything = (json.dumps(headers) + body.decode()).lower()
    assert "aiohttp" not in everything and "python" not in everything
    assert b"Bad Header" not in body and b"aaaa" not in body  # the request's bytes are not echoed back


async def test_the_gateway_still_answers_on_a_fresh_connection_after_one(api: Api) -> None:
    await _raw(api.client, UNPARSABLE["an invalid method"])
    status, headers, body = await _raw(api.client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and headers["server"] == "semaflow"
    assert json.loads(body) == {"status": "ok"}


@pytest.mark.parametrize(
    "request_line", [b"GET /healthz", b"GET /nowhere", b"DELETE /healthz", b"GET /v1/collections"], ids=str
)
async def test_every_parsed_request_is_answered_with_server_semaflow(api: Api, request_line: bytes) -> None:
    status, headers, _ = await _raw(api.client, request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status in (200, 401, 404, 405)
    assert headers["server"] == "semaflow"
