"""Webhook delivery by a notifier running in-process against a real Redis and a real HTTP receiver.

Events are published on the stream the way the other services publish them; endpoints are created
through the shared store the gateway uses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from semaflow.redis_server import RedisServer
from services.notifier import delivery as delivery_module
from services.notifier.http import CONTENT_TYPE, GuardedResolver, RefusedAddress
from shared import keys
from shared.clock import now_ms
from shared.config import Settings
from shared.messaging import bus, tasks
from shared.messaging.events import CloudEvent, IndexPublished, JobFailed, JobSucceeded
from shared.records import deadletters, tenants
from shared.records.deadletters import LetterFilter
from shared.webhooks import endpoints
from shared.webhooks.deliveries import Deliveries, Delivery, DeliveryState, NewDelivery, new_delivery_id
from shared.webhooks.destinations import AllowList
from shared.webhooks.endpoints import Endpoint
from tests.integration.conftest import RunningNotifier, closed_port
from tests.peers import HANG, Receiver, SmtpServer, eventually
from tests.streams import publish

StartNotifier = Callable[[Settings], Awaitable[RunningNotifier]]


@pytest.fixture
def client(aio_redis: aioredis.Redis) -> aioredis.Redis:
    return aio_redis


Make = Callable[..., Settings]


def _succeeded(job: str, tenant: str = "acme") -> JobSucceeded:
    return JobSucceeded(tenant=tenant, collection="papers", job_id=job, version="0000000001-ab")


async def _endpoint(
    client: aioredis.Redis, url: str, types: tuple[str, ...] = ("*",), tenant: str = "acme"
) -> tuple[Endpoint, str]:
    return await endpoints.create(client, tenant, url, types)


async def _deliveries(settings: Settings, client: aioredis.Redis, endpoint_id: str) -> list[Delivery]:
    found, _ = await Deliveries(client, retention_s=settings.webhook_log_retention_s).scan(endpoint_id, limit=500)
    return [d for d, _ in found]


def _verify(secret: str, hit_body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    verified: dict[str, Any] = Webhook(secret).verify(hit_body, headers)
    return verified


async def test_events_reach_the_subscribed_endpoints_signed_by_the_standard(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings()
    jobs_ep, jobs_secret = await _endpoint(client, receiver.url("/jobs"), ("job.*",))
    index_ep, index_secret = await _endpoint(client, receiver.url("/index"), ("index.published",))
    await _endpoint(client, receiver.url("/other"), ("*",), tenant="globex")
    await notifier(settings)

    done = await publish(client, _succeeded("job_1"))
    published = await publish(
        client, IndexPublished(tenant="acme", collection="papers", version="v2", documents=3, segments=1)
    )
    failed = await publish(client, JobFailed(tenant="acme", collection="papers", job_id="job_2", error="bad"))

    job_hits = await receiver.wait_for("/jobs", 2)
    index_hits = await receiver.wait_for("/index", 1)
    by_id = {h.headers["webhook-id"]: h for h in job_hits}
    assert set(by_id) == {done.id, failed.id}
    for event in (done, failed):
        hit = by_id[event.id]
        assert hit.headers["Content-Type"] == CONTENT_TYPE
        body = _verify(jobs_secret, hit.body, hit.headers)
        assert body["specversion"] == "1.0" and body["id"] == event.id and body["type"] == event.type
        assert body["data"]["job_id"] == event.data["job_id"]
    assert _verify(index_secret, index_hits[0].body, index_hits[0].headers)["data"]["version"] == "v2"
    assert index_hits[0].headers["webhook-id"] == published.id

    await asyncio.sleep(0.5)  # nothing else arrives: not another tenant's event, not an unsubscribed type
    assert len(receiver.at("/jobs")) == 2 and len(receiver.at("/index")) == 1 and not receiver.at("/other")
    logged = await eventually(lambda: _all_in(settings, client, jobs_ep.id, DeliveryState.SUCCEEDED, 2))
    assert {d.event_id for d in logged} == {done.id, failed.id}
    assert all(d.attempts == 1 and d.last_status == 200 for d in logged)
    assert (await _deliveries(settings, client, index_ep.id))[0].state is DeliveryState.SUCCEEDED


async def test_every_event_is_delivered_once_and_nothing_is_left_in_flight_when_the_notifier_stops(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given 200 events for one endpoint, delivered
    settings = webhook_settings()
    endpoint, _ = await _endpoint(client, receiver.url("/many"), ("job.*",))
    running = await notifier(settings)
    for n in range(200):
        await publish(client, _succeeded(f"job_{n}"))
    await receiver.wait_for("/many", 200)

    # When the notifier stops
    await running.shutdown()

    # Then each was delivered once, no attempt is held, and no Dramatiq message was involved
    assert len({h.headers["webhook-id"] for h in receiver.at("/many")}) == len(receiver.at("/many")) == 200
    assert await client.zcard(keys.webhook_in_flight(endpoint.id)) == 0
    assert await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.SUCCEEDED, 200))
    ready, _ = keys.dramatiq_queues(tasks.NOTIFY_QUEUE)
    assert await client.llen(ready) == 0 and await client.hlen(keys.dramatiq_messages(tasks.NOTIFY_QUEUE)) == 0


async def test_a_process_claims_no_more_attempts_than_it_has_slots(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given a notifier with 3 attempt slots, and an endpoint allowed 50 in flight whose first 3 hang
    settings = webhook_settings(webhook_max_in_flight=3, webhook_endpoint_concurrency=50, webhook_timeout_s=60.0)
    endpoint, _ = await _endpoint(client, receiver.url("/slow"), ("job.*",))
    receiver.script("/slow", HANG, HANG, HANG, 200)
    await notifier(settings)

    # When 10 events are published
    sent = [await publish(client, _succeeded(f"job_{n}")) for n in range(10)]

    # Then only 3 deliveries are claimed and attempted; the other 7 wait in the endpoint's queue
    await receiver.wait_for("/slow", 3)
    await asyncio.sleep(0.5)
    assert len(receiver.at("/slow")) == 3
    assert await client.zcard(keys.webhook_in_flight(endpoint.id)) == 3
    assert await client.zcard(keys.webhook_due(endpoint.id)) == 7

    # And once the hanging attempts end (503: retried), the freed slots take the waiting deliveries
    receiver.release.set()
    hits = await receiver.wait_for("/slow", 10 + 3)
    assert {h.headers["webhook-id"] for h in hits} == {e.id for e in sent}
    assert await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.SUCCEEDED, 10))


async def _all_in(
    settings: Settings, client: aioredis.Redis, endpoint_id: str, state: DeliveryState, n: int
) -> list[Delivery] | None:
    found = await _deliveries(settings, client, endpoint_id)
    return found if len(found) == n and all(d.state is state for d in found) else None


async def test_failed_attempts_are_retried_on_the_time_scaled_schedule(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given a schedule of 0.4 s doubling to a 1 s cap, jitter up to 25 %, 5 attempts
    settings = webhook_settings(
        webhook_retry_initial_s=0.4, webhook_retry_max_s=1.0, webhook_retry_jitter=0.25, webhook_max_attempts=5
    )
    endpoint, secret = await _endpoint(client, receiver.url("/flaky"))
    receiver.script("/flaky", 500, 502, (503, {}), 200)
    await notifier(settings)

    # When the receiver fails three times, then accepts
    event = await publish(client, _succeeded("job_1"))
    hits = await receiver.wait_for("/flaky", 4)

    # Then each retry came no earlier than the schedule's shortest jittered delay, and not much later
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    for gap, base in zip(gaps, (0.4, 0.8, 1.0), strict=True):
        assert base * 0.75 - 0.02 <= gap <= base + 0.5, (gaps, base)
    # Every attempt carries the same webhook-id and a fresh, valid signature
    assert {h.headers["webhook-id"] for h in hits} == {event.id}
    for hit in hits:
        _verify(secret, hit.body, hit.headers)
    delivery = (await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.SUCCEEDED, 1)))[0]
    attempts = await Deliveries(client, retention_s=60).attempts(delivery.id)
    assert [a.status for a in attempts] == [500, 502, 503, 200]
    assert [a.n for a in attempts] == [1, 2, 3, 4]
    assert all(a.latency_ms > 0 for a in attempts)
    assert attempts[0].response.startswith("answer 500 ") and len(attempts[0].response.encode()) == 1024
    await asyncio.sleep(1.2)
    assert len(receiver.at("/flaky")) == 4  # nothing after the success


async def test_a_timeout_and_a_refused_connection_are_failed_attempts_that_retry(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given a 0.5 s request timeout, two attempts, an endpoint that first hangs and one nobody listens on
    settings = webhook_settings(
        webhook_timeout_s=0.5, webhook_retry_initial_s=0.2, webhook_retry_max_s=0.2, webhook_max_attempts=2
    )
    slow, _ = await _endpoint(client, receiver.url("/slow"), ("job.*",))
    dead, _ = await _endpoint(client, f"http://127.0.0.1:{closed_port()}/hook", ("job.*",))
    receiver.script("/slow", HANG, 200)
    await notifier(settings)

    # When an event goes to both
    event = await publish(client, _succeeded("job_1"))

    # Then the timed-out attempt is a failure, retried with the same webhook-id, and the retry succeeds
    (delivered,) = await eventually(lambda: _all_in(settings, client, slow.id, DeliveryState.SUCCEEDED, 1))
    store = Deliveries(client, retention_s=60)
    first, second = await store.attempts(delivered.id)
    assert (first.status, first.error, second.status) == (None, "timed out after 0.5 s", 200)
    assert first.latency_ms >= 500
    assert {h.headers["webhook-id"] for h in receiver.at("/slow")} == {event.id}
    # and the refused connection fails every attempt until the delivery is exhausted
    (exhausted,) = await eventually(lambda: _all_in(settings, client, dead.id, DeliveryState.EXHAUSTED, 1))
    attempts = await store.attempts(exhausted.id)
    assert [a.status for a in attempts] == [None, None]
    assert all((a.error or "").startswith("cannot connect") for a in attempts), attempts


async def test_429_and_503_wait_as_long_as_retry_after_asks(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings(webhook_retry_initial_s=0.1, webhook_retry_max_s=0.1)
    await _endpoint(client, receiver.url("/busy"))
    receiver.script("/busy", (429, {"Retry-After": "2"}), (503, {"Retry-After": "1"}), 200)
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    hits = await receiver.wait_for("/busy", 3)
    assert hits[1].at - hits[0].at >= 2.0 - 0.02  # the schedule alone would have waited 0.1 s
    assert hits[2].at - hits[1].at >= 1.0 - 0.02


async def test_410_gone_disables_the_endpoint_at_once_and_tells_the_tenant(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver, smtp: SmtpServer
) -> None:
    settings = webhook_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
    await tenants.set_contact(client, "acme", "ops@acme.test")
    endpoint, _ = await _endpoint(client, receiver.url("/gone"))
    receiver.script("/gone", 410)
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/gone", 1)
    disabled = await eventually(lambda: _disabled(client, endpoint))
    assert disabled.disabled_reason == "the endpoint answered 410 Gone"
    (delivery,) = await _deliveries(settings, client, endpoint.id)
    assert delivery.state is DeliveryState.FAILED and delivery.last_status == 410

    mails = await smtp.wait_for(1)
    assert mails[0].recipients == ["ops@acme.test"]
    assert "was disabled" in str(mails[0].message["Subject"])
    assert "410 Gone" in mails[0].part("plain") and "410 Gone" in mails[0].part("html")

    await publish(client, _succeeded("job_2"))  # a disabled endpoint gets nothing more
    await asyncio.sleep(0.8)
    assert len(receiver.at("/gone")) == 1


async def _disabled(client: aioredis.Redis, endpoint: Endpoint) -> Endpoint | None:
    found = await endpoints.get(client, endpoint.tenant, endpoint.id)
    return found if found is not None and found.disabled else None


async def test_an_exhausted_delivery_is_announced_dead_lettered_and_mailed(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver, smtp: SmtpServer
) -> None:
    settings = webhook_settings(
        webhook_max_attempts=3, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none"
    )
    await tenants.set_contact(client, "acme", "ops@acme.test")
    broken, _ = await _endpoint(client, receiver.url("/broken"), ("job.*", "webhook.*"))
    _, watcher_secret = await _endpoint(client, receiver.url("/watcher"), ("webhook.*",))
    receiver.script("/broken", 500)
    await notifier(settings)

    event = await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/broken", 3)

    # The other endpoint hears about it, signed as any event
    (notice,) = await receiver.wait_for("/watcher", 1)
    body = _verify(watcher_secret, notice.body, notice.headers)
    assert body["type"] == "webhook.delivery.exhausted"
    data = body["data"]
    assert data["endpoint_id"] == broken.id and data["event_id"] == event.id and data["attempts"] == 3
    assert data["last_status"] == 500 and data["error"] == "HTTP 500"

    # A dead letter keeps it, and the delivery points at it
    letters, _ = await deadletters.scan(client, "acme", LetterFilter(queue="notify"), limit=10)
    assert len(letters) == 1 and letters[0].id == data["dead_letter"]
    assert letters[0].op == "deliver_webhook" and letters[0].attempts == 3
    assert letters[0].arguments["delivery_id"] == data["delivery_id"]
    (delivery,) = [d for d in await _deliveries(settings, client, broken.id) if d.event_id == event.id]
    assert delivery.state is DeliveryState.EXHAUSTED and delivery.dead_letter == letters[0].id

    # The tenant's contact gets a mail
    (mail,) = await smtp.wait_for(1)
    assert "gave up" in str(mail.message["Subject"]) and data["delivery_id"] in mail.part("plain")

    # The failing endpoint is never sent news of its own failure (it subscribed to webhook.* too)
    await asyncio.sleep(0.8)
    assert all(json.loads(h.body)["type"] == "job.succeeded" for h in receiver.at("/broken"))


async def test_an_endpoint_failing_for_too_long_is_disabled(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver, smtp: SmtpServer
) -> None:
    settings = webhook_settings(
        webhook_disable_after_s=1.0,
        webhook_max_attempts=20,
        webhook_retry_initial_s=0.3,
        webhook_retry_max_s=0.3,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_security="none",
    )
    await tenants.set_contact(client, "acme", "ops@acme.test")
    endpoint, _ = await _endpoint(client, receiver.url("/down"))
    receiver.script("/down", 500)
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    disabled = await eventually(lambda: _disabled(client, endpoint))
    assert disabled.disabled_reason == "no successful delivery for 1 s"
    assert 2 <= len(receiver.at("/down")) < 20
    (mail,) = await smtp.wait_for(1)
    assert "disabled" in str(mail.message["Subject"])


async def test_a_dead_endpoint_never_holds_up_another(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given an endpoint that never answers, with at most 2 attempts in flight per endpoint
    settings = webhook_settings(webhook_endpoint_concurrency=2, webhook_timeout_s=60.0)
    await _endpoint(client, receiver.url("/dead"))
    await _endpoint(client, receiver.url("/alive"))
    receiver.script("/dead", HANG)
    await notifier(settings)

    # When 60 events are published to both
    sent = [await publish(client, _succeeded(f"job_{i}")) for i in range(60)]

    # Then the live endpoint gets every one of them while the dead one holds just its 2 attempts
    hits = await receiver.wait_for("/alive", 60)
    assert {h.headers["webhook-id"] for h in hits} == {e.id for e in sent}
    assert len(receiver.at("/dead")) == 2


async def test_a_failing_endpoint_is_held_to_fewer_attempts_in_flight(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given an endpoint allowed 10 attempts in flight, 2 once it fails, whose first answer is a 500
    settings = webhook_settings(
        webhook_endpoint_concurrency=10,
        webhook_failing_endpoint_concurrency=2,
        webhook_timeout_s=60.0,
        webhook_retry_initial_s=30.0,
    )
    await _endpoint(client, receiver.url("/bad"), ("job.*",))
    receiver.script("/bad", 500, HANG)
    await notifier(settings)
    await publish(client, _succeeded("job_0"))
    await receiver.wait_for("/bad", 1)

    # When 10 more events arrive while it is failing (and hangs from now on)
    for i in range(1, 11):
        await publish(client, _succeeded(f"job_{i}"))

    # Then it holds only 2 attempts, not 10
    await receiver.wait_for("/bad", 3)
    await asyncio.sleep(1.0)
    assert len(receiver.at("/bad")) == 3


async def test_redirects_are_not_followed(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings(webhook_max_attempts=2)
    endpoint, _ = await _endpoint(client, receiver.url("/moved"))
    receiver.script("/moved", 302)
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/moved", 2)
    (delivery,) = await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.EXHAUSTED, 1))
    assert delivery.last_status == 302
    assert not receiver.at("/redirected")


async def test_private_destinations_are_refused_when_connecting(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given endpoints saved while 127.0.0.1 was allowed, and a notifier that no longer allows it
    settings = webhook_settings(webhook_allow_hosts="", webhook_max_attempts=1)
    by_address, _ = await _endpoint(client, receiver.url("/private"), ("job.*",))
    by_name, _ = await _endpoint(client, f"http://localhost:{receiver.port}/private", ("job.*",))
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    for endpoint_id in (by_address.id, by_name.id):
        (delivery,) = await eventually(_exhausted_one(settings, client, endpoint_id))
        assert delivery.last_status is None and delivery.last_error is not None
        assert delivery.last_error.startswith("refused: "), delivery.last_error
    assert not receiver.at("/private")


def _exhausted_one(settings: Settings, client: aioredis.Redis, endpoint_id: str) -> Callable[[], Awaitable[Any]]:
    return lambda: _all_in(settings, client, endpoint_id, DeliveryState.EXHAUSTED, 1)


async def test_the_resolver_refuses_names_that_resolve_only_to_private_addresses() -> None:
    resolver = GuardedResolver(AllowList())
    try:
        refused = None
        try:
            await resolver.resolve("localhost", 80)
        except RefusedAddress as exc:
            refused = exc
        assert refused is not None and "not a public address" in str(refused)
        allowed = GuardedResolver(AllowList.parse("127.0.0.0/8, ::1"))
        assert {r["host"] for r in await allowed.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
        await allowed.close()
    finally:
        await resolver.close()


async def _waiting_delivery(client: aioredis.Redis, endpoint: Endpoint) -> tuple[Deliveries, CloudEvent]:
    """A delivery queued for ``endpoint`` directly in the store, as the notifier's fan-out queues one."""
    store = Deliveries(client, retention_s=600)
    now = now_ms()
    event = CloudEvent.wrap(_succeeded("job_1"), source="semaflow/test")
    new = NewDelivery("dlv_" + event.id[:24], endpoint.id, "acme", event.id, event.type)
    await store.create([new], [("acme", event.id, now, event.encode())], now)
    return store, event


async def test_a_lease_whose_holder_died_is_claimed_again(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given a delivery claimed by a notifier that died before attempting it (a 300 ms lease)
    settings = webhook_settings()
    endpoint, _ = await _endpoint(client, receiver.url("/late"))
    store, event = await _waiting_delivery(client, endpoint)
    assert len(await store.claim(endpoint.id, now_ms(), concurrency=5, lease_ms=300)) == 1

    # When a live notifier runs
    await notifier(settings)

    # Then the delivery is made once its lease has run out
    (hit,) = await receiver.wait_for("/late", 1)
    assert hit.headers["webhook-id"] == event.id
    delivered = await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.SUCCEEDED, 1))
    assert delivered[0].attempts == 1


async def test_an_event_handled_twice_is_delivered_once(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings()
    await _endpoint(client, receiver.url("/once"))
    await notifier(settings)

    event = CloudEvent.wrap(_succeeded("job_1"), source="semaflow/test")
    for _ in range(2):  # the same event on the stream twice, as after a crash between publish and ack
        await bus.apublish(client, event, maxlen=10_000)
    await receiver.wait_for("/once", 1)
    await asyncio.sleep(0.8)
    assert len(receiver.at("/once")) == 1


async def test_an_endpoint_gets_only_events_published_after_it_was_created(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings()
    await publish(client, _succeeded("job_before"))
    await _endpoint(client, receiver.url("/new"))
    after = await publish(client, _succeeded("job_after"))
    await notifier(settings)

    (hit,) = await receiver.wait_for("/new", 1)
    assert hit.headers["webhook-id"] == after.id
    await asyncio.sleep(0.5)
    assert len(receiver.at("/new")) == 1


async def test_deliveries_wait_while_their_endpoint_is_disabled_and_resume_after(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings(webhook_retry_initial_s=0.5, webhook_retry_max_s=0.5, webhook_max_attempts=10)
    endpoint, _ = await _endpoint(client, receiver.url("/paused"))
    receiver.script("/paused", 500, 200)
    await notifier(settings)

    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/paused", 1)
    await endpoints.update(client, endpoint, disabled=True)  # while the retry waits
    await asyncio.sleep(1.2)
    assert len(receiver.at("/paused")) == 1
    (waiting,) = await _deliveries(settings, client, endpoint.id)
    assert waiting.state is DeliveryState.PENDING

    await endpoints.update(client, (await endpoints.get(client, "acme", endpoint.id)) or endpoint, disabled=False)
    await receiver.wait_for("/paused", 2)
    await eventually(lambda: _all_in(settings, client, endpoint.id, DeliveryState.SUCCEEDED, 1))


async def test_stopping_hands_attempts_under_way_back(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings(webhook_timeout_s=60.0, shutdown_timeout_s=0.5)
    endpoint, _ = await _endpoint(client, receiver.url("/slow"))
    receiver.script("/slow", HANG)
    running = await notifier(settings)

    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/slow", 1)
    await running.shutdown()

    (delivery,) = await _deliveries(settings, client, endpoint.id)
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 0
    assert await client.zscore(keys.webhook_due(endpoint.id), delivery.id) is not None
    assert not await client.zcard(keys.webhook_in_flight(endpoint.id))


async def test_attempts_a_stopping_notifier_hands_back_start_at_once_on_another(
    client: aioredis.Redis,
    webhook_settings: Make,
    notifier: StartNotifier,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fallback read of the schedule far beyond the test: only the announcement can start the attempt.
    monkeypatch.setattr(delivery_module, "DUE_POLL_S", 60.0)
    settings = webhook_settings(webhook_timeout_s=60.0, shutdown_timeout_s=0.5)
    await _endpoint(client, receiver.url("/handed"))
    receiver.script("/handed", HANG)  # the first attempt hangs; the next is answered 200
    leaving = await notifier(settings)
    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/handed", 1)
    await notifier(settings)
    await asyncio.sleep(0.3)  # idle: it read the schedule, where the delivery is leased for a minute more
    await leaving.shutdown()
    await receiver.wait_for("/handed", 2, timeout_s=5.0)


async def test_the_sweep_starts_deliveries_the_schedule_lost_track_of(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    # Given a waiting delivery whose endpoint is missing from the global schedule (as after a
    # partial write), so the dispatcher never looks at it
    settings = webhook_settings()
    endpoint, _ = await _endpoint(client, receiver.url("/swept"))
    _, event = await _waiting_delivery(client, endpoint)
    await client.zrem(keys.WEBHOOK_SCHEDULE, endpoint.id)
    running = await notifier(settings)
    await asyncio.sleep(0.6)
    assert not receiver.at("/swept")

    # When the periodic sweep runs (fired by its schedule)
    await client.hset(keys.schedule("delivery-sweep"), mapping={"run_id": "tick-1", "outcome": "enqueued"})
    sweep = tasks.SweepDeliveries(schedule="delivery-sweep", run_id="tick-1")
    await asyncio.to_thread(tasks.SWEEP_DELIVERIES.send, running.notifier.service.broker, sweep)

    # Then the delivery goes out, and the schedule hears how the sweep went
    (hit,) = await receiver.wait_for("/swept", 1)
    assert hit.headers["webhook-id"] == event.id
    state = await eventually(lambda: _finished(client, "delivery-sweep"))
    assert state[b"outcome"] == b"succeeded" and state[b"detail"] == b"deliveries started: 1"


async def test_deleting_an_endpoint_mid_attempt_leaves_nothing_queued(
    client: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, receiver: Receiver
) -> None:
    settings = webhook_settings()
    endpoint, _ = await _endpoint(client, receiver.url("/doomed"))
    receiver.script("/doomed", HANG)
    await notifier(settings)
    await publish(client, _succeeded("job_1"))
    await receiver.wait_for("/doomed", 1)

    await endpoints.delete(client, endpoint)
    receiver.release.set()  # the attempt now gets a 503, which would be retried

    store = Deliveries(client, retention_s=600)
    delivery_id = await eventually(lambda: _only_delivery_failed(client, store))
    assert delivery_id
    assert not await client.exists(keys.webhook_due(endpoint.id), keys.webhook_in_flight(endpoint.id))
    assert await client.zscore(keys.WEBHOOK_SCHEDULE, endpoint.id) is None


async def _only_delivery_failed(client: aioredis.Redis, store: Deliveries) -> str | None:
    found = [keys.text(k) async for k in client.scan_iter(match=keys.delivery("*"))]
    ids = [k.rsplit(":", 1)[-1] for k in found if not k.endswith(":attempts")]
    if len(ids) != 1:
        return None
    delivery = await store.get("acme", ids[0])
    return ids[0] if delivery is not None and delivery.state is DeliveryState.FAILED else None


async def _finished(client: aioredis.Redis, schedule: str) -> dict[Any, Any] | None:
    state: dict[Any, Any] = await client.hgetall(keys.schedule(schedule))
    return state if state.get(b"outcome") in (b"succeeded", b"failed") else None


async def test_deliveries_queued_elsewhere_start_at_once_and_an_idle_dispatcher_reads_no_schedule(
    webhook_settings: Make,
    notifier: StartNotifier,
    receiver: Receiver,
    own_redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fallback read of the schedule far beyond the test: only the announcement can start the attempt.
    monkeypatch.setattr(delivery_module, "DUE_POLL_S", 60.0)
    settings = webhook_settings(redis_url=own_redis_server.url)
    client = aioredis.Redis.from_url(own_redis_server.url)
    try:
        endpoint, _ = await _endpoint(client, receiver.url("/elsewhere"))
        await notifier(settings)
        await asyncio.sleep(0.5)  # subscribed, first pass made: idle now

        async def schedule_reads() -> int:
            stats = await client.info("commandstats")
            return int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0))

        before = await schedule_reads()
        await asyncio.sleep(2.0)
        assert await schedule_reads() == before  # nothing due, nothing announced: no reads (it polled 4 a second)

        # Queued as the gateway queues a test event: another process, nothing on the stream.
        event = CloudEvent.wrap(_succeeded("job_9"), source="semaflow/test", subject="job_9")
        now = now_ms()
        new = NewDelivery(new_delivery_id(), endpoint.id, "acme", event.id, event.type, trigger="test")
        loop = asyncio.get_running_loop()
        queued = loop.time()
        await Deliveries(client, retention_s=settings.webhook_log_retention_s).create(
            [new], [("acme", event.id, now, event.encode())], now
        )
        await receiver.wait_for("/elsewhere", 1, timeout_s=5.0)
        assert loop.time() - queued < 1.0
    finally:
        await client.aclose()
