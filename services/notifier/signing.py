"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from shared.webhooks.endpoints import secret_key


def signature(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per secret, space-separated.

    During a rotation both the new and the old secret sign, so a receiver that knows either verifies.
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode() for s in secrets
    )


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (``webhook-id`` stays the same on every retry)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets, message_id, timestamp, body),
    }
