"""Signatures checked with the independent ``standardwebhooks`` package, not with semaflow's own code."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.notifier.signing import headers
from shared.webhooks.endpoints import new_secret, secret_key

BODY = json.dumps({"specversion": "1.0", "type": "job.succeeded", "data": {"job_id": "job_1"}}).encode()


def test_a_signed_request_verifies_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    now = int(time.time())
    sent = headers([secret], "evt_1", now, BODY)
    assert sent["webhook-id"] == "evt_1"
    assert sent["webhook-timestamp"] == str(now)
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, sent) == json.loads(BODY)


def test_a_tampered_body_or_a_wrong_secret_does_not_verify() -> None:
    secret = new_secret()
    sent = headers([secret], "evt_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"job_1", b"job_2"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    new, old = new_secret(), new_secret()
    sent = headers([new, old], "evt_2", int(time.time()), BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(BODY, sent)
    assert Webhook(old).verify(BODY, sent)


def test_secrets_follow_the_whsec_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 32
    assert new_secret() != secret
