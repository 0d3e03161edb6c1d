"""The notifier's HTTP client: one pooled session whose every connection passes the destination guard."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.constants import WEBHOOK_RESPONSE_LOG_BYTES
from shared.errors import InvalidInput
from shared.webhooks.destinations import check_url

if TYPE_CHECKING:
    from shared.webhooks.destinations import AllowList

USER_AGENT: Final = "semaflow-webhooks/1.0"
CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
# Bodies up to this size are read to the end so the connection can be reused; a longer one is cut off
# (only its first kilobyte is kept anyway) and its connection closed.
_DRAIN_BYTES: Final = 64 * 1024


class RefusedAddress(OSError):
    """Every address a webhook host resolves to is refused by the destination guard."""


class GuardedResolver(AbstractResolver):
    """Resolves names as usual, then keeps only the addresses webhooks may reach.

    The connector connects only to addresses this returns, so the address checked is the address
    connected to: a name that resolves differently at delivery time than when it was saved cannot
    reach a private address.
    """

    def __init__(self, allow: AllowList, inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self.allow.allows_host(host):
            return found
        kept = [r for r in found if self.allow.allows_address(r["host"])]
        if not kept:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            raise RefusedAddress(
                f"{host} resolves to {addresses}: not a public address (allow it with SEMAFLOW_WEBHOOK_ALLOW_HOSTS)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


def open_session(allow: AllowList, *, timeout_s: float, max_connections: int) -> aiohttp.ClientSession:
    """A session for webhook attempts: guarded resolver, no cookies, no redirects (see :func:`post`)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,  # per-endpoint concurrency is enforced by the delivery queue, across processes
        resolver=GuardedResolver(allow),
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s)),
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


@dataclass(frozen=True)
class Answer:
    """What one POST came back with: a status and the start of the body, or the error that prevented one."""

    status: int | None
    latency_ms: float
    body: str = ""
    retry_after: str | None = None
    error: str | None = None


async def _read_head(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _DRAIN_BYTES:
        chunk = await response.content.read(_DRAIN_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not response.content.at_eof():
        response.close()
    return b"".join(chunks)


def refusal(url: str, allow: AllowList) -> str | None:
    """Why ``url`` may not be called, judged before any name lookup (None when it may)."""
    try:
        check_url(url, allow)
    except InvalidInput as exc:
        return f"refused: {exc}"
    return None


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> Answer:
    """POST ``body`` to ``url``; never raises for what the network or the receiver does.

    The caller checks :func:`refusal` first: an address written in the URL never reaches the
    resolver that guards names. Redirects are not followed (a 3xx is a failed attempt): following
    one would send the signed event somewhere the tenant never configured.
    """
    started = time.perf_counter()

    def answer(**fields: object) -> Answer:
        return Answer(latency_ms=round((time.perf_counter() - started) * 1000, 3), **fields)  # type: ignore[arg-type]

    try:
        async with session.post(
            url, data=body, headers={**headers, "Content-Type": CONTENT_TYPE}, allow_redirects=False
        ) as response:
            head = await _read_head(response)
            return answer(
                status=response.status,
                body=head[:WEBHOOK_RESPONSE_LOG_BYTES].decode("utf-8", errors="replace"),
                retry_after=response.headers.get("Retry-After"),
            )
    except TimeoutError:
        return answer(status=None, error=f"timed out after {timeout_s:g} s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, RefusedAddress):
            return answer(status=None, error=f"refused: {exc.os_error}")
        return answer(status=None, error=f"cannot connect: {exc.os_error or exc}")
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        return answer(status=None, error=f"{type(exc).__name__}: {exc}"[:500])
