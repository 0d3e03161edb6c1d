"""``semaflow.webhooks.verify`` against signatures made by the independent ``standardwebhooks`` package and by the
notifier's own signer."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from semaflow.webhooks import BadSignature, StaleTimestamp, WebhookVerificationError, verify
from services.notifier.signing import headers
from shared.webhooks.endpoints import new_secret

BODY = json.dumps({"specversion": "1.0", "type": "job.succeeded", "data": {"job_id": "job_1"}}).encode()


def _standard_headers(secret: str, msg_id: str, when: int, body: bytes) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(when, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(when), "webhook-signature": signature}


def test_a_delivery_signed_by_the_standard_webhooks_library_verifies_and_returns_the_event() -> None:
    secret = new_secret()
    sent = _standard_headers(secret, "evt_1", int(time.time()), BODY)
    assert verify(sent, BODY, secret) == json.loads(BODY)


def test_a_delivery_signed_by_the_notifier_verifies_with_either_secret_of_a_rotation() -> None:
    new, old = new_secret(), new_secret()
    sent = headers([new, old], "evt_2", int(time.time()), BODY)
    assert verify(sent, BODY, new) == json.loads(BODY)
    assert verify(sent, BODY.decode(), old) == json.loads(BODY)
    assert verify(sent, BODY, [new_secret(), old]) == json.loads(BODY)


def test_header_names_are_found_whatever_their_case() -> None:
    secret = new_secret()
    sent = {k.title(): v for k, v in headers([secret], "evt_3", int(time.time()), BODY).items()}
    assert "Webhook-Signature" in sent
    assert verify(sent, BODY, secret)["type"] == "job.succeeded"


def test_a_tampered_body_a_wrong_secret_or_a_foreign_id_is_a_bad_signature() -> None:
    secret = new_secret()
    sent = headers([secret], "evt_4", int(time.time()), BODY)
    with pytest.raises(BadSignature):
        verify(sent, BODY.replace(b"job_1", b"job_2"), secret)
    with pytest.raises(BadSignature):
        verify(sent, BODY, new_secret())
    with pytest.raises(BadSignature):
        verify({**sent, "webhook-id": "evt_5"}, BODY, secret)


def test_an_old_or_future_timestamp_is_stale_even_when_correctly_signed() -> None:
    secret = new_secret()
    now = int(time.time())
    old = headers([secret], "evt_6", now - 301, BODY)
    with pytest.raises(StaleTimestamp):
        verify(old, BODY, secret)
    assert verify(old, BODY, secret, tolerance_s=600)
    future = _standard_headers(secret, "evt_7", now + 400, BODY)
    with pytest.raises(StaleTimestamp):
        verify(future, BODY, secret)


def test_missing_or_malformed_headers_are_refused() -> None:
    secret = new_secret()
    sent = headers([secret], "evt_8", int(time.time()), BODY)
    for name in sent:
        with pytest.raises(WebhookVerificationError, match=name):
            verify({k: v for k, v in sent.items() if k != name}, BODY, secret)
    with pytest.raises(WebhookVerificationError, match="not a number"):
        verify({**sent, "webhook-timestamp": "soon"}, BODY, secret)
    with pytest.raises(BadSignature):
        verify({**sent, "webhook-signature": "v2," + sent["webhook-signature"][3:]}, BODY, secret)
