"""End to end, as operators see it: one trace per ingest across the processes, every metric the
alerts and dashboards use exported by a running stack, and logs that tie to traces and never show
a secret.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import trustme
from standardwebhooks import Webhook

from tests.e2e.conftest import Stack, start_stack, wait_job
from tests.observability.contract import Contract
from tests.observability.usage import used_series
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.peers import Receiver, SmtpServer, eventually

pytestmark = pytest.mark.e2e

SMTP_PASSWORD = "mail-" + secrets.token_urlsafe(16)
SERVER, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER = 2, 4, 5


@dataclass
class Observed:
    """A stack exporting its traces to a receiver here, mailing through an SMTP server here."""

    stack: Stack
    otlp: OtlpReceiver
    smtp: SmtpServer
    data_dir: Path
    secrets: list[str]

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url((self.data_dir / "redis-url").read_text().strip())


def _otlp_in_a_thread() -> tuple[OtlpReceiver, asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="otlp-receiver", daemon=True)
    thread.start()
    receiver = OtlpReceiver()
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    return receiver, loop, thread


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    otlp, loop, thread = _otlp_in_a_thread()
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    smtp = SmtpServer(tls=context, users={"mailer": SMTP_PASSWORD})
    smtp.start()
    data_dir = tmp_path_factory.mktemp("observed") / "data"
    stack = start_stack(
        data_dir,
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "SEMAFLOW_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "SEMAFLOW_SMTP_HOST": "127.0.0.1",
            "SEMAFLOW_SMTP_PORT": str(smtp.port),
            "SEMAFLOW_SMTP_SECURITY": "starttls",
            "SEMAFLOW_SMTP_USERNAME": "mailer",
            "SEMAFLOW_SMTP_PASSWORD": SMTP_PASSWORD,
            "SEMAFLOW_SMTP_CA_FILE": str(ca_file),
        },
    )
    yield Observed(stack, otlp, smtp, data_dir, [stack.api_key, SMTP_PASSWORD])
    code = stack.stop()
    smtp.stop()
    asyncio.run_coroutine_threadsafe(otlp.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    assert code == 0, stack.logs()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def _call(http: aiohttp.ClientSession, stack: Stack, method: str, path: str, status: int, **kwargs: Any) -> Any:
    headers = {**stack.auth, **kwargs.pop("headers", {})}
    async with http.request(method, stack.url + path, headers=headers, **kwargs) as resp:
        assert resp.status == status, (method, path, resp.status, await resp.text())
        return await resp.json() if resp.content_type.endswith("json") else None


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, found)
    return found[0]


async def test_one_ingest_is_one_trace_across_every_process(observed: Observed) -> None:
    stack = observed.stack
    receiver = Receiver()
    await receiver.start()
    traceparent, trace_id, client_span = _traceparent()
    try:
        async with aiohttp.ClientSession() as http:
            await _call(http, stack, "PUT", "/v1/collections/traced", 201)
            hook = {"url": receiver.url("/events"), "event_types": ["job.*", "index.published"]}
            secret = (await _call(http, stack, "POST", "/v1/webhooks", 201, json=hook))["secret"]
            observed.secrets.append(secret)
            docs = {"documents": [{"id": f"t{i}", "text": f"a traced document number {i}"} for i in range(5)]}
            accepted = await _call(
                http,
                stack,
                "POST",
                "/v1/collections/traced/documents",
                202,
                json=docs,
                headers={"traceparent": traceparent},
            )
            await wait_job(http, stack, accepted["job_id"])
            hits = await receiver.wait_for("/events", 2, timeout_s=60)
    finally:
        await receiver.stop()

    # The webhook requests carry the trace on, and are signed as always
    for hit in hits:
        assert hit.headers["traceparent"].split("-")[1] == trace_id
        Webhook(secret).verify(hit.body, hit.headers)

    # job.succeeded and index.published: two fan-outs, two deliveries
    wanted = {
        "POST /v1/collections/{name}/documents": 1,
        "embed_batch": 1,
        "index_batch": 1,
        "index.swap": 1,
        "webhook.fan_out": 2,
        "webhook.deliver": 2,
    }
    spans = await observed.otlp.wait_for(trace_id, wanted)
    request = _one(spans, "POST /v1/collections/{name}/documents")
    embed, index, swap = _one(spans, "embed_batch"), _one(spans, "index_batch"), _one(spans, "index.swap")
    assert (request.service, request.parent_id, request.kind) == ("semaflow-gateway", client_span, SERVER)
    assert request.attributes["semaflow.tenant"] == "dev"
    assert (embed.service, embed.parent_id) == ("semaflow-embedder", request.span_id)
    assert (index.service, index.parent_id) == ("semaflow-indexer", embed.span_id)
    assert (swap.service, swap.parent_id, swap.kind) == ("semaflow-gateway", index.span_id, SPAN_KIND_CONSUMER)
    fan_outs = [s for s in spans if s.name == "webhook.fan_out"]
    assert {s.service for s in fan_outs} == {"semaflow-notifier"}
    assert {s.parent_id for s in fan_outs} == {index.span_id}  # job.succeeded and index.published
    delivered = [s for s in spans if s.name == "webhook.deliver"]
    assert len(delivered) >= 2 and {s.parent_id for s in delivered} <= {s.span_id for s in fan_outs}
    assert {s.attributes.get("http.response.status_code") for s in delivered} == {"200"}

    # The services' log lines of this ingest carry its trace id, their service and the tenant (the
    # notifier logs a successful attempt at debug level only)
    lines = [json.loads(line) for line in stack.log.read_text().splitlines() if trace_id in line]
    assert {"gateway", "embedder", "indexer"} <= {line.get("service") for line in lines}
    accepted_lines = [line for line in lines if line.get("event") == "batch.accepted"]
    assert accepted_lines and accepted_lines[0]["tenant"] == "dev" and accepted_lines[0]["span_id"]


async def test_a_search_is_a_trace_with_cache_embedding_and_faiss_spans(observed: Observed) -> None:
    stack = observed.stack
    traceparent, trace_id, client_span = _traceparent()
    async with aiohttp.ClientSession() as http:
        body = {"query": "traced document", "k": 3}
        found = await _call(
            http,
            stack,
            "POST",
            "/v1/collections/traced/search",
            200,
            json=body,
            headers={"traceparent": traceparent},
        )
    assert found["results"]
    wanted = {"POST /v1/collections/{name}/search", "search.cache", "search.embed", "search.faiss"}
    spans = await observed.otlp.wait_for(trace_id, wanted)
    request = _one(spans, "POST /v1/collections/{name}/search")
    assert request.parent_id == client_span
    for name in ("search.cache", "search.embed", "search.faiss"):
        child = _one(spans, name)
        assert (child.service, child.parent_id) == ("semaflow-gateway", request.span_id)
    assert _one(spans, "search.cache").attributes["semaflow.cache"] == "miss"


async def test_a_schedule_firing_carries_its_trace_to_the_task_in_the_message_options(observed: Observed) -> None:
    stack = observed.stack
    async with aiohttp.ClientSession() as http:
        await _call(http, stack, "POST", "/v1/schedules/stats/trigger", 202)

    def linked() -> list[tuple[ReceivedSpan, ReceivedSpan]]:
        fires = [s for s in observed.otlp.spans if s.name == "schedule.fire stats"]
        tasks = [s for s in observed.otlp.spans if s.name == "task refresh_stats"]
        return [(f, t) for f in fires for t in tasks if (t.trace_id, t.parent_id) == (f.trace_id, f.span_id)]

    fire, task = (await eventually(linked, timeout_s=60))[0]
    assert (fire.service, fire.kind) == ("semaflow-scheduler", SPAN_KIND_PRODUCER)
    assert (task.service, task.kind) == ("semaflow-indexer", SPAN_KIND_CONSUMER)
    assert task.attributes["messaging.destination.name"] == "maintenance"


def _scrape(url: str, headers: dict[str, str] | None = None) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        text: str = resp.read().decode()
        return text


def _families(exposition: str) -> set[str]:
    """The metric families an exposition declares (even those without a sample yet)."""
    return set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.M))


def _value(exposition: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", exposition, flags=re.M)
    assert match, sample
    return float(match.group(1))


async def test_every_metric_the_alerts_and_dashboards_use_is_exported(observed: Observed) -> None:
    # Given the processes' metrics endpoints (each worker says in its heartbeat where it serves them)
    client = observed.redis()
    expositions: dict[str, str] = {"gateway": _scrape(observed.stack.url + "/metrics", observed.stack.auth)}
    for key in client.scan_iter(match="semaflow:hb:*"):
        service = key.decode().split(":")[2]
        address = json.loads(client.get(key) or b"{}").get("metrics")
        assert address, f"{service} serves no metrics"
        assert _scrape(f"http://{address}/healthz") == '{"status": "ok"}'
        expositions[service] = expositions.get(service, "") + _scrape(f"http://{address}/metrics")
    client.close()
    assert set(expositions) == {"gateway", "embedder", "indexer", "notifier", "scheduler"}

    # Then every series an alert or a dashboard queries is exported by each process the contract names
    contract = Contract.load()
    missing = []
    for series in sorted(used_series()):
        metric = contract.family(series)
        assert metric is not None, series
        for exporter in metric.exporters:
            declared = _families(expositions[exporter]) if exporter != "prometheus" else {series}
            if series not in declared and metric.name not in declared:  # counters: NAME_total; histograms: NAME
                missing.append(f"{series} from {exporter}")
    assert not missing, missing

    # and the figures reflect what the stack did
    gateway, embedder, notifier = expositions["gateway"], expositions["embedder"], expositions["notifier"]
    assert _value(embedder, "semaflow_embed_documents_total") >= 5
    assert _value(embedder, 'semaflow_embed_backend{backend="torch"}') == 1  # the e2e stacks run torch
    assert _value(notifier, 'semaflow_webhook_deliveries_total{outcome="succeeded"}') >= 2
    assert _value(gateway, "semaflow_redis_up") == 1
    # the cluster gauges are read every few seconds: the workers' first beats may not be in yet
    for _ in range(100):
        if _value(gateway, 'semaflow_workers{service="embedder"}') == 1:
            break
        await asyncio.sleep(0.2)
        gateway = _scrape(observed.stack.url + "/metrics", observed.stack.auth)
    assert _value(gateway, 'semaflow_workers{service="embedder"}') == 1
    assert _value(gateway, 'semaflow_workers{service="scheduler"}') == 1
    assert _value(gateway, "semaflow_faiss_search_seconds_count") >= 1
    assert 'route="/v1/collections/{name}/documents"' in gateway


async def test_no_secret_ever_reaches_the_logs(observed: Observed) -> None:
    stack = observed.stack
    async with aiohttp.ClientSession() as http:
        # A mail makes the notifier log in to the SMTP server with its password
        await _call(http, stack, "PATCH", "/v1/tenant", 200, json={"contact_email": "ops@dev.test"})
        await _call(http, stack, "POST", "/v1/schedules/digest/trigger", 202)
        # A rotated webhook secret
        hooks = (await _call(http, stack, "GET", "/v1/webhooks", 200))["webhooks"]
        rotated = await _call(http, stack, "POST", f"/v1/webhooks/{hooks[0]['id']}/rotate-secret", 200)
        observed.secrets.append(rotated["secret"])
        # A request with a wrong key
        async with http.get(stack.url + "/v1/collections", headers={"Authorization": "Bearer sf_wrong-key"}) as r:
            assert r.status == 401
    (mail,) = await observed.smtp.wait_for(1, timeout_s=60)
    assert mail.tls and mail.login == "mailer" and "Your week" in str(mail.message["Subject"])

    logs = stack.log.read_text()
    assert logs.count("\n") > 50
    for secret in [*observed.secrets, "sf_wrong-key"]:
        assert secret not in logs
    key_body = stack.api_key.removeprefix("sf_")
    assert key_body[:16] not in logs
