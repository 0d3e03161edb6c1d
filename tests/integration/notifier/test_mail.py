"""Notification mail and the weekly digest, sent by an in-process notifier to a real SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
import trustme
from pydantic import SecretStr

from semaflow.redis_server import free_port
from services.notifier.fanout import iso_week
from shared import keys
from shared.config import Settings
from shared.messaging import bus, tasks
from shared.messaging.events import BatchAccepted, JobFailed, JobSucceeded, WebhookDeliveryExhausted
from shared.records import deadletters, tenants
from shared.records.deadletters import LetterFilter
from tests.integration.conftest import Api, RunningNotifier
from tests.peers import SmtpServer, eventually
from tests.streams import publish

StartNotifier = Callable[[Settings], Awaitable[RunningNotifier]]
Make = Callable[..., Settings]


def _failed(job: str, tenant: str = "acme") -> JobFailed:
    return JobFailed(tenant=tenant, collection="papers", job_id=job, error="CorruptObject: batch <b1> unreadable")


def _plain(make: Make, smtp: SmtpServer, **extra: object) -> Settings:
    return make(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none", **extra)


async def test_a_failed_job_is_mailed_over_starttls_with_a_login(
    aio_redis: aioredis.Redis,
    webhook_settings: Make,
    notifier: StartNotifier,
    smtp_tls: SmtpServer,
    smtp_ca: tuple[trustme.CA, Path],
) -> None:
    settings = webhook_settings(
        smtp_host="127.0.0.1",
        smtp_port=smtp_tls.port,
        smtp_security="starttls",
        smtp_username="mailer",
        smtp_password=SecretStr("s3cret-pass"),
        smtp_ca_file=smtp_ca[1],
        email_from="semaflow <alerts@semaflow.test>",
    )
    await tenants.set_contact(aio_redis, "acme", "ops@acme.test")
    await notifier(settings)

    await publish(aio_redis, _failed("job_42"))
    (mail,) = await smtp_tls.wait_for(1)
    assert mail.tls and mail.login == "mailer"
    assert mail.recipients == ["ops@acme.test"] and mail.sender == "alerts@semaflow.test"
    assert mail.message["Subject"] == "[semaflow] Job job_42 failed in papers"
    text, html = mail.part("plain"), mail.part("html")
    assert "job_42" in text and "CorruptObject: batch <b1> unreadable" in text
    assert "CorruptObject: batch &lt;b1&gt; unreadable" in html
    assert "POST /v1/jobs/job_42/retry" in text


async def test_no_contact_means_no_mail(
    aio_redis: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, smtp: SmtpServer
) -> None:
    await tenants.set_contact(aio_redis, "globex", "it@globex.test")
    await notifier(_plain(webhook_settings, smtp))

    await publish(aio_redis, _failed("job_1", tenant="acme"))  # acme set no address
    await publish(aio_redis, _failed("job_2", tenant="globex"))
    mails = await smtp.wait_for(1)
    await asyncio.sleep(0.5)
    assert [m.recipients for m in mails] == [["it@globex.test"]]


async def test_mail_is_limited_per_tenant_per_hour(
    aio_redis: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, smtp: SmtpServer
) -> None:
    await tenants.set_contact(aio_redis, "acme", "ops@acme.test")
    await tenants.set_contact(aio_redis, "globex", "it@globex.test")
    await notifier(_plain(webhook_settings, smtp, email_max_per_hour=2))

    for i in range(4):
        await publish(aio_redis, _failed(f"job_{i}"))
    await publish(aio_redis, _failed("job_g", tenant="globex"))
    await smtp.wait_for(3)
    await asyncio.sleep(0.5)
    assert sorted(m.recipients[0] for m in smtp.mails) == ["it@globex.test", "ops@acme.test", "ops@acme.test"]


async def test_the_weekly_digest_reports_the_week_once(
    aio_redis: aioredis.Redis, webhook_settings: Make, notifier: StartNotifier, smtp: SmtpServer
) -> None:
    await tenants.set_contact(aio_redis, "acme", "ops@acme.test")
    await aio_redis.sadd(keys.tenants(), "acme", "initech")  # initech has no contact: no digest
    running = await notifier(_plain(webhook_settings, smtp))
    week = iso_week(datetime.now(UTC))

    # Given a week of events (each counted once, even when it comes twice)
    accepted = await publish(
        aio_redis, BatchAccepted(tenant="acme", collection="c", batch_id="b", job_id="j1", documents=7)
    )
    await bus.apublish(aio_redis, accepted, maxlen=10_000)
    await publish(aio_redis, BatchAccepted(tenant="acme", collection="c", batch_id="b2", job_id="j2", documents=5))
    await publish(aio_redis, JobSucceeded(tenant="acme", collection="c", job_id="j1"))
    await publish(aio_redis, _failed("j2"))
    exhausted = WebhookDeliveryExhausted(
        tenant="acme",
        endpoint_id="ep_1",
        url="https://hooks.example.com",
        delivery_id="dlv_1",
        event_id="e1",
        event_type="job.succeeded",
        attempts=15,
        error="HTTP 500",
    )
    await publish(aio_redis, exhausted)
    counts = keys.digest_counts("acme", week)
    await eventually(lambda: _counted(aio_redis, counts, "deliveries_exhausted"))
    await smtp.wait_for(2)  # the failed job's and the exhausted delivery's own mails

    # When the digest's schedule fires (for every tenant), twice
    broker = running.notifier.service.broker
    await aio_redis.hset(keys.schedule("digest"), mapping={"run_id": "tick-2", "outcome": "enqueued"})
    for run in ("tick-1", "tick-2"):
        fired = tasks.SendDigest(week=week, schedule="digest", run_id=run)
        await asyncio.to_thread(tasks.SEND_DIGEST.send, broker, fired)

    # Then acme gets one digest with the week's figures
    await smtp.wait_for(3)
    await asyncio.sleep(1.0)
    digests = [m for m in smtp.mails if "Your week" in str(m.message["Subject"])]
    assert len(digests) == 1
    (digest,) = digests
    assert digest.recipients == ["ops@acme.test"]
    assert digest.message["Subject"] == f"[semaflow] Your week {week}: 12 documents ingested"
    text = digest.part("plain")
    for line in (
        "Documents ingested:           12",
        "Jobs succeeded:               1",
        "Jobs failed:                  1",
        "Webhook deliveries exhausted: 1",
    ):
        assert line in text, text
    # and the schedule's current run reports how it went (an older run's report is ignored)
    state = await aio_redis.hgetall(keys.schedule("digest"))
    assert state[b"outcome"] == b"succeeded" and state[b"detail"] == f"digests of {week} queued for 2 tenants".encode()


async def _counted(client: aioredis.Redis, key: str, field: str) -> bool:
    return bool(await client.hget(key, field))


async def test_an_unsendable_mail_becomes_a_dead_letter_that_replays(
    aio_redis: aioredis.Redis, api: Api, webhook_settings: Make, notifier: StartNotifier
) -> None:
    # Given an SMTP server that is down (nothing listens on its port yet)
    port = free_port()
    settings = webhook_settings(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_timeout_s=2.0)
    await tenants.set_contact(aio_redis, "acme", "ops@acme.test")
    await notifier(settings)

    # When a job fails: the mail is tried max_retries + 1 times, then kept as a dead letter
    await publish(aio_redis, _failed("job_7"))
    letters = await eventually(lambda: _letters(aio_redis))
    (letter,) = letters
    assert letter.op == "send_email" and letter.queue == "notify" and letter.job_id is None
    assert letter.attempts == settings.max_retries + 1 and "cannot send mail" in letter.error
    assert letter.arguments["kind"] == "job_failed" and letter.arguments["context"]["job_id"] == "job_7"

    # Then once the server is back, replaying the letter sends the mail
    server = SmtpServer()
    server.start(port)
    try:
        resp = await api.client.post(f"/v1/dead-letters/{letter.id}/replay", headers=api.auth)
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["op"] == "send_email"
        (mail,) = await server.wait_for(1)
        assert "job_7" in str(mail.message["Subject"])
    finally:
        server.stop()
    assert not await _letters(aio_redis)


async def _letters(client: aioredis.Redis) -> list[deadletters.DeadLetter]:
    found, _ = await deadletters.scan(client, "acme", LetterFilter(queue="notify"), limit=10)
    return found
