"""Webhooks over the HTTP API, with a notifier running in-process and a real receiver."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from shared.config import Settings
from shared.messaging.events import IndexPublished, JobSucceeded
from shared.records import apikeys
from tests.integration.conftest import Api, RunningNotifier
from tests.peers import Receiver, eventually
from tests.streams import publish

StartNotifier = Callable[[Settings], Awaitable[RunningNotifier]]
Make = Callable[..., Settings]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The gateway here may create webhooks to 127.0.0.1 (the receiver)."""
    return settings.model_copy(update={"webhook_allow_hosts": "127.0.0.1"})


async def _create(api: Api, url: str, types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": types or ["*"], **extra}
    resp = await api.client.post("/v1/webhooks", json=body, headers=api.auth)
    assert resp.status == 201, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def _json(api: Api, method: str, path: str, status: int, **kwargs: Any) -> Any:
    resp = await api.client.request(method, path, headers=api.auth, **kwargs)
    assert resp.status == status, (method, path, resp.status, await resp.text())
    return await resp.json() if resp.content_type.endswith("json") else None


def _job(job: str) -> JobSucceeded:
    return JobSucceeded(tenant="acme", collection="papers", job_id=job)


async def test_a_webhook_is_created_read_changed_and_deleted(api: Api, receiver: Receiver) -> None:
    resp = await api.client.post(
        "/v1/webhooks",
        json={"url": receiver.url("/a"), "event_types": ["job.*", "job.*"], "description": "ops"},
        headers=api.auth,
    )
    assert resp.status == 201
    created = await resp.json()
    assert created["id"].startswith("ep_") and resp.headers["Location"] == f"/v1/webhooks/{created['id']}"
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["job.*"] and created["description"] == "ops" and created["disabled"] is False
    path = f"/v1/webhooks/{created['id']}"

    listed = await _json(api, "GET", "/v1/webhooks", 200)
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]]
    shown = await _json(api, "GET", path, 200)
    assert "secret" not in shown and "secret" not in listed["webhooks"][0]
    assert shown["url"] == receiver.url("/a")

    changed = await _json(api, "PATCH", path, 200, json={"event_types": ["index.published"], "description": "x"})
    assert changed["event_types"] == ["index.published"] and changed["description"] == "x"
    assert changed["url"] == receiver.url("/a")
    off = await _json(api, "PATCH", path, 200, json={"disabled": True})
    assert off["disabled"] is True and off["disabled_reason"] == "disabled by request" and off["disabled_at"]
    on = await _json(api, "PATCH", path, 200, json={"disabled": False})
    assert on["disabled"] is False and on["disabled_reason"] is None
    await _json(api, "PATCH", path, 422, json={})

    assert (await api.client.delete(path, headers=api.auth)).status == 204
    gone = await api.client.get(path, headers=api.auth)
    assert gone.status == 404 and gone.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "http://127.0.0.1:9/x", "event_types": ["jobs.*"]}, "/event_types/0"),
        ({"url": "http://127.0.0.1:9/x", "event_types": ["*", ""]}, "/event_types/1"),
        ({"url": "http://127.0.0.1:9/x", "event_types": ["job."]}, "/event_types/0"),
        ({"url": "http://127.0.0.1:9/x", "event_types": []}, "/event_types"),
        ({"url": "ftp://example.com/x", "event_types": ["*"]}, "/url"),
        ({"url": "http://10.1.2.3/hook", "event_types": ["*"]}, "/url"),
        ({"url": "http://169.254.169.254/latest", "event_types": ["*"]}, "/url"),
        ({"url": "http://localhost:9/hook", "event_types": ["*"]}, "/url"),
        ({"url": "https://user:pw@example.com/hook", "event_types": ["*"]}, "/url"),
        ({"event_types": ["*"]}, "/url"),
        ({"url": "http://127.0.0.1:9/x", "event_types": ["*"], "secret": "mine"}, "/secret"),
    ],
)
async def test_unusable_webhooks_are_refused_with_a_pointer(api: Api, body: dict[str, Any], pointer: str) -> None:
    resp = await api.client.post("/v1/webhooks", json=body, headers=api.auth)
    assert resp.status == 422, await resp.text()
    problem = await resp.json()
    assert pointer in [e["pointer"] for e in problem["errors"]], problem


async def test_the_openapi_document_names_exactly_the_subscribable_event_types(api: Api) -> None:
    # Given the schema of an event_types item, as the API describes it
    document = await (await api.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    item = schemas["WebhookCreate"]["properties"]["event_types"]["items"]
    pattern = re.compile(item["pattern"])

    # Then what it admits is what the server admits
    assert all(pattern.fullmatch(t) for t in ("*", "job.*", "job.succeeded", "webhook.delivery.*"))
    assert not any(pattern.fullmatch(t) for t in ("", "job.", "jobs.*", "*.*", "job.succeeded.*"))


async def test_another_tenants_webhooks_and_deliveries_are_invisible(
    api: Api, receiver: Receiver, redis_client: redis.Redis, aio_redis: aioredis.Redis
) -> None:
    created = await _create(api, receiver.url("/mine"))
    test = await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 202)
    other = apikeys.new_key()
    apikeys.store(redis_client, other, "globex")
    auth = {"Authorization": f"Bearer {other}"}
    hook, delivery = f"/v1/webhooks/{created['id']}", f"/v1/deliveries/{test['id']}"

    listed = await (await api.client.get("/v1/webhooks", headers=auth)).json()
    assert listed == {"webhooks": []}
    since = {"since": "2020-01-01T00:00:00Z"}
    for method, path, body in [
        ("GET", hook, None),
        ("PATCH", hook, {"description": "mine now"}),
        ("DELETE", hook, None),
        ("POST", f"{hook}/rotate-secret", None),
        ("POST", f"{hook}/test", None),
        ("GET", f"{hook}/deliveries", None),
        ("POST", f"{hook}/replay", since),
        ("GET", delivery, None),
        ("POST", f"{delivery}/retry", None),
    ]:
        resp = await api.client.request(method, path, json=body, headers=auth)
        assert resp.status == 404, (method, path, resp.status)
    assert (await _json(api, "GET", hook, 200))["description"] == ""  # untouched


async def test_a_test_event_is_delivered_and_logged_with_each_attempt(
    api: Api, receiver: Receiver, webhook_settings: Make, notifier: StartNotifier
) -> None:
    await notifier(webhook_settings())
    created = await _create(api, receiver.url("/t"), ["index.published"])
    queued = await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 202)
    assert queued["trigger"] == "test" and queued["event_type"] == "webhook.test" and queued["attempts"] == []

    (hit,) = await receiver.wait_for("/t", 1)
    body = Webhook(created["secret"]).verify(hit.body, hit.headers)
    assert body["type"] == "webhook.test" and body["data"]["endpoint_id"] == created["id"]
    assert hit.headers["webhook-id"] == queued["event_id"]

    shown = await eventually(lambda: _delivered(api, queued["id"]))
    (attempt,) = shown["attempts"]
    assert attempt["n"] == 1 and attempt["status"] == 200 and attempt["latency_ms"] > 0 and attempt["error"] is None
    assert attempt["response"].startswith("answer 200 ") and len(attempt["response"]) == 1024
    assert shown["attempt_count"] == 1 and shown["last_status"] == 200 and shown["next_attempt_at"] is None

    # The log, newest first, with a cursor and a state filter
    for _ in range(2):
        await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 202)
    await receiver.wait_for("/t", 3)
    log_path = f"/v1/webhooks/{created['id']}/deliveries"
    await eventually(lambda: _all_succeeded(api, log_path, 3))
    first = await _json(api, "GET", f"{log_path}?limit=2", 200)
    assert len(first["deliveries"]) == 2 and first["next_cursor"]
    rest = await _json(api, "GET", f"{log_path}?limit=2&cursor={first['next_cursor']}", 200)
    assert [d["id"] for d in rest["deliveries"]] == [queued["id"]] and rest["next_cursor"] is None
    assert (await _json(api, "GET", f"{log_path}?state=exhausted", 200))["deliveries"] == []
    await _json(api, "GET", f"{log_path}?state=lost", 422)
    await _json(api, "GET", f"{log_path}?cursor=garbage", 422)


async def _delivered(api: Api, delivery_id: str) -> dict[str, Any] | None:
    shown: dict[str, Any] = await _json(api, "GET", f"/v1/deliveries/{delivery_id}", 200)
    return shown if shown["state"] == "succeeded" else None


async def _all_succeeded(api: Api, path: str, n: int) -> bool:
    found = (await _json(api, "GET", f"{path}?state=succeeded", 200))["deliveries"]
    return len(found) == n


async def test_after_a_rotation_both_secrets_sign_until_the_grace_period_ends(
    api: Api, receiver: Receiver, webhook_settings: Make, notifier: StartNotifier
) -> None:
    await notifier(webhook_settings())
    created = await _create(api, receiver.url("/rot"))
    rotated = await _json(api, "POST", f"/v1/webhooks/{created['id']}/rotate-secret", 200)
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert "secret" not in await _json(api, "GET", f"/v1/webhooks/{created['id']}", 200)

    await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 202)
    (hit,) = await receiver.wait_for("/rot", 1)
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], rotated["secret"]):
        assert Webhook(secret).verify(hit.body, hit.headers)["type"] == "webhook.test"


async def test_a_short_grace_period_ends_the_old_secret(
    api: Api, receiver: Receiver, webhook_settings: Make, notifier: StartNotifier, aio_redis: aioredis.Redis
) -> None:
    await notifier(webhook_settings())
    created = await _create(api, receiver.url("/rot"))
    from shared.webhooks import endpoints

    endpoint = await endpoints.get(aio_redis, "acme", created["id"])
    assert endpoint is not None
    _, new_secret = await endpoints.rotate_secret(aio_redis, endpoint, grace_s=0)
    await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 202)
    (hit,) = await receiver.wait_for("/rot", 1)
    assert len(hit.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new_secret).verify(hit.body, hit.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(created["secret"]).verify(hit.body, hit.headers)


async def test_an_exhausted_delivery_can_be_retried_or_replayed_from_its_dead_letter(
    api: Api, receiver: Receiver, webhook_settings: Make, notifier: StartNotifier, aio_redis: aioredis.Redis
) -> None:
    await notifier(webhook_settings(webhook_max_attempts=2))
    created = await _create(api, receiver.url("/retry"), ["job.*"])
    receiver.script("/retry", 500, 500, 500, 500, 200)
    first = await publish(aio_redis, _job("job_1"))
    second = await publish(aio_redis, _job("job_2"))
    await receiver.wait_for("/retry", 4)
    log_path = f"/v1/webhooks/{created['id']}/deliveries?state=exhausted"
    exhausted = await eventually(lambda: _exhausted(api, log_path, 2))
    by_event = {d["event_id"]: d for d in exhausted}
    letters = (await _json(api, "GET", "/v1/dead-letters?queue=notify", 200))["dead_letters"]
    assert {letter["id"] for letter in letters} == {d["dead_letter"] for d in exhausted}
    notify = (await _json(api, "GET", "/v1/queues", 200))["queues"]["notify"]
    assert notify["dead"] == 2 and notify["processed_last_minute"] == 4 and notify["workers"] == 1
    assert notify["depth"] == {"normal": 0} and notify["in_flight"] == 0

    # Retry one delivery directly: it goes out again with a fresh set of attempts
    retried = await _json(api, "POST", f"/v1/deliveries/{by_event[first.id]['id']}/retry", 202)
    assert retried["state"] == "pending" and retried["dead_letter"] is None
    hits = await receiver.wait_for("/retry", 5)
    assert hits[-1].headers["webhook-id"] == first.id
    done = await eventually(lambda: _delivered(api, retried["id"]))
    assert [a["status"] for a in done["attempts"]] == [500, 500, 200]
    assert (await _json(api, "POST", f"/v1/deliveries/{retried['id']}/retry", 202))["state"] == "pending"

    # Replay the other one's dead letter
    letter = by_event[second.id]["dead_letter"]
    replayed = await _json(api, "POST", f"/v1/dead-letters/{letter}/replay", 202)
    assert replayed["id"] == by_event[second.id]["id"] and replayed["state"] == "pending"
    await eventually(lambda: _delivered(api, replayed["id"]))
    remaining = (await _json(api, "GET", "/v1/dead-letters?queue=notify", 200))["dead_letters"]
    assert remaining == []


async def _exhausted(api: Api, path: str, n: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = (await _json(api, "GET", path, 200))["deliveries"]
    return found if len(found) == n and all(d["dead_letter"] for d in found) else None


async def test_replay_resends_every_subscribed_event_since_a_moment(
    api: Api, receiver: Receiver, webhook_settings: Make, notifier: StartNotifier, aio_redis: aioredis.Redis
) -> None:
    await notifier(webhook_settings())
    created = await _create(api, receiver.url("/r"), ["job.*"])
    events = []
    marks = []
    for i in range(3):
        marks.append(datetime.now(UTC))
        await asyncio.sleep(0.005)  # events land strictly after their mark (times are in milliseconds)
        events.append(await publish(aio_redis, _job(f"job_{i}")))
        await asyncio.sleep(0.005)
    await publish(aio_redis, IndexPublished(tenant="acme", collection="papers", version="v", documents=1, segments=1))
    await receiver.wait_for("/r", 3)

    path = f"/v1/webhooks/{created['id']}/replay"
    everything = await _json(api, "POST", path, 202, json={"since": marks[0].isoformat()})
    assert everything == {"matched": 3}
    hits = await receiver.wait_for("/r", 6)
    assert sorted(h.headers["webhook-id"] for h in hits[3:]) == sorted(e.id for e in events)
    window = {"since": marks[1].isoformat(), "until": marks[2].isoformat()}
    assert await _json(api, "POST", path, 202, json=window) == {"matched": 1}
    assert (await receiver.wait_for("/r", 7))[-1].headers["webhook-id"] == events[1].id
    await _json(api, "POST", path, 422, json={"since": "2026-01-01T00:00:00"})  # no time zone
    await _json(api, "POST", path, 422, json={"since": marks[2].isoformat(), "until": marks[0].isoformat()})


async def test_a_disabled_webhook_takes_no_test_replay_or_retry(api: Api, receiver: Receiver) -> None:
    created = await _create(api, receiver.url("/off"), disabled=True)
    assert created["disabled"] is True
    await _json(api, "POST", f"/v1/webhooks/{created['id']}/test", 409)
    await _json(api, "POST", f"/v1/webhooks/{created['id']}/replay", 409, json={"since": "2026-01-01T00:00:00Z"})


async def test_the_tenant_contact_address(api: Api) -> None:
    assert await _json(api, "GET", "/v1/tenant", 200) == {"name": "acme", "contact_email": None}
    set_ = await _json(api, "PATCH", "/v1/tenant", 200, json={"contact_email": "ops@acme.test"})
    assert set_ == {"name": "acme", "contact_email": "ops@acme.test"}
    for bad in ("not-an-address", "a@b", "x" * 250 + "@acme.test"):
        await _json(api, "PATCH", "/v1/tenant", 422, json={"contact_email": bad})
    assert (await _json(api, "PATCH", "/v1/tenant", 200, json={"contact_email": None}))["contact_email"] is None
