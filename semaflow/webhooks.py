"""Verifying semaflow's webhooks in a receiver: the Standard Webhooks scheme the notifier signs with.

Each delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (one or more
space-separated ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; two while a secret is being rotated)::

    from semaflow.webhooks import verify, WebhookVerificationError

    try:
        event = verify(request.headers, body_bytes, "whsec_...")
    except WebhookVerificationError:
        return 400
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Final

from shared.webhooks.endpoints import secret_key

#: How far a delivery's timestamp may be from the receiver's clock (either way): replays older than this fail.
DEFAULT_TOLERANCE_S: Final = 300


class WebhookVerificationError(Exception):
    """A delivery is not proven to come from semaflow: a header is missing, the signature does not match, or the
    timestamp is too old (or too far in the future)."""


class StaleTimestamp(WebhookVerificationError):
    """The delivery's ``webhook-timestamp`` is outside the tolerance: a replay, or a clock far off."""


class BadSignature(WebhookVerificationError):
    """No signature in ``webhook-signature`` matches the body under the secret(s)."""


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # A plain dict may keep the sender's capitalisation.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def _key(secret: str) -> bytes:
    try:
        return secret_key(secret)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the secret is not a whsec_ secret (base64 after the prefix)") from exc


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | list[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Check a delivery's signature and timestamp; returns its body parsed (the CloudEvent as JSON).

    ``secret`` is the endpoint's ``whsec_…`` secret, or several (the new and the old one during a rotation).

    Raises:
        WebhookVerificationError: a header is missing or malformed; ``StaleTimestamp``: too old or too new;
            ``BadSignature``: no signature matches.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    message_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {stamp!r}") from exc
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise StaleTimestamp(f"webhook-timestamp {timestamp} is {clock - timestamp:+.0f} s from now")
    signed = f"{message_id}.{timestamp}.".encode() + raw
    keys = [_key(s) for s in ([secret] if isinstance(secret, str) else secret)]
    expected = [base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()) for k in keys]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(value.encode(), e) for e in expected):
            return json.loads(raw) if raw else None
    raise BadSignature("no webhook-signature matches the body")
