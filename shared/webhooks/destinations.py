"""Which destinations a webhook may reach: the server-side request forgery guard.

A webhook URL is chosen by a tenant, and semaflow calls it from inside the operator's network. So a
destination whose address is not globally routable (private, loopback, link-local, shared, reserved,
multicast...) is refused unless the operator allow-lists its host name or a range holding its address.
The check runs when an endpoint is saved (a clear 422) and again on every connection, against the
address actually connected to, so a DNS answer that changes later cannot get around it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from shared.errors import ConfigurationError, InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
_SCHEMES: Final = ("http", "https")
_LABEL: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# A name lookup at save time gets this long; a slow resolver must not hang the API.
_RESOLVE_TIMEOUT_S: Final = 2.0


class DestinationRefused(InvalidInput):
    """The webhook destination is not allowed (a private address that is not allow-listed)."""


def _address(value: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    # ::ffff:10.0.0.1 reaches 10.0.0.1: judge the IPv4 address it maps to.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class AllowList:
    """Host names and address ranges that webhooks may reach although they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Parse ``"hooks.internal, 127.0.0.1, 10.0.0.0/8"``.

        Raises:
            ConfigurationError: an entry is neither a host name nor an address or range.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry or _address(entry) is not None:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError as exc:
                    raise ConfigurationError(f"invalid address range {entry!r} in the webhook allow-list") from exc
            elif all(_LABEL.fullmatch(part) for part in entry.rstrip(".").split(".")):
                hosts.add(entry.rstrip("."))
            else:
                raise ConfigurationError(f"invalid host {entry!r} in the webhook allow-list")
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` is allow-listed by name."""
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: str) -> bool:
        """Whether a connection to ``address`` is allowed: public, or in an allow-listed range."""
        ip = _address(address)
        if ip is None:
            return False
        if any(ip in net for net in self.networks):
            return True
        return ip.is_global and not ip.is_multicast


def _host_of(url: str) -> tuple[str, str | None]:
    """The URL's host (lower case, without a trailing dot), and why the URL is unusable (None when it is fine)."""
    if len(url) > MAX_URL_LENGTH:
        return "", f"is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return "", f"is not a valid URL ({exc})"
    if parts.scheme not in _SCHEMES:
        return "", "must be an http:// or https:// URL"
    # A host name may end in the root's dot ("localhost." is localhost): judge it without the dot.
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "", "has no host"
    if parts.username is not None or parts.password is not None:
        return "", "must not carry credentials (sign requests with the endpoint secret instead)"
    if port == 0:
        return "", "has an invalid port"
    if parts.fragment:
        return "", "must not have a #fragment"
    return host, None


def check_url(url: str, allow: AllowList) -> str:
    """The URL's host if the URL may be a webhook destination, before any name lookup.

    Raises:
        InvalidInput: the URL is malformed, not http(s), or carries credentials.
        DestinationRefused: its host is a non-public address, or ``localhost``, and not allow-listed.
    """
    host, problem = _host_of(url)
    if problem is not None:
        raise InvalidInput(f"the URL {problem}")
    if allow.allows_host(host):
        return host
    if _address(host) is not None:
        if not allow.allows_address(host):
            raise DestinationRefused(
                f"the URL points at {host}, a private, loopback or otherwise non-public address "
                "(allow it with SEMAFLOW_WEBHOOK_ALLOW_HOSTS)"
            )
    elif host == "localhost" or host.endswith(".localhost"):
        raise DestinationRefused(f"the URL points at {host} (allow it with SEMAFLOW_WEBHOOK_ALLOW_HOSTS)")
    return host


async def check_destination(url: str, allow: AllowList) -> None:
    """:func:`check_url`, then refuse a host name whose every address is refused.

    A name that does not resolve now is accepted: it may well resolve later, and every connection
    is checked again anyway.

    Raises:
        InvalidInput: as :func:`check_url`.
        DestinationRefused: as :func:`check_url`, or the name resolves only to refused addresses.
    """
    host = check_url(url, allow)
    if allow.allows_host(host) or _address(host) is not None:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return
    addresses = {str(info[4][0]) for info in infos}
    if addresses and not any(allow.allows_address(a) for a in addresses):
        raise DestinationRefused(
            f"{host} resolves to {', '.join(sorted(addresses))}: private, loopback or otherwise non-public "
            "addresses (allow them with SEMAFLOW_WEBHOOK_ALLOW_HOSTS)"
        )
