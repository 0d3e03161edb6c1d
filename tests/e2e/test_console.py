"""The operator console in a real browser (Debian's chromium under Playwright) against ``semaflow up``.

Sign in, create a collection and ingest into it, watch the job reach 100 %, search; cancel queued jobs
(one, then all matching a filter after the count is shown); replay a dead letter and retry a failed
webhook delivery; trigger a schedule; a reader sees no write action and the API refuses its forced
write; every page passes axe-core with no serious or critical violation; and with 100,000 jobs and
10,000 dead letters stored, each page renders its first page of data (figures printed; the lists page
through the API's cursors).

``SEMAFLOW_CONSOLE_SCREENSHOTS=docs/console`` also saves a screenshot of every page there.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, expect, sync_playwright

from shared import keys
from shared.messaging.workqueue import Priority
from shared.records import deadletters, jobs
from shared.records.jobs import Job, JobKind, JobState, Task
from tests.e2e.conftest import Stack, corpus, start_stack
from tests.e2e.console_browser import Console, Http, chromium_path, sign_in

pytestmark = pytest.mark.e2e

SCREENSHOTS = os.environ.get("SEMAFLOW_CONSOLE_SCREENSHOTS")
JOBS_SEEDED = 100_000
# Every page, and the jobs list unfiltered, by a common state, by collection, by both (1 in 220 jobs match)
# and by a state no job of the tenant is in (the filter reads every record before it answers an empty page).
RAREST = "jobs?state=running"
SPARSE = (RAREST, "jobs?collection=c7&state=queued")
LOAD_ROUTES = (
    "overview",
    "collections",
    "jobs",
    "jobs?state=failed",
    "jobs?collection=c7",
    "jobs?collection=c7&state=queued",
    RAREST,
    "dead-letters",
    "webhooks",
    "schedules",
    "keys",
)
LETTERS_SEEDED = 10_000


class FlakySink:
    """A webhook receiver on 127.0.0.1 that answers 500 until told to accept."""

    def __init__(self) -> None:
        self.accept = threading.Event()
        self.received = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.received += 1
                self.send_response(200 if sink.accept.is_set() else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """A stack whose webhooks give up fast: two attempts one second apart."""
    data_dir = tmp_path_factory.mktemp("console") / "data"
    running = start_stack(
        data_dir,
        extra_env={
            "SEMAFLOW_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "SEMAFLOW_WEBHOOK_RETRY_SCHEDULE": "1",
            "SEMAFLOW_WEBHOOK_MAX_ATTEMPTS": "2",
        },
    )
    yield running, data_dir
    code = running.stop()
    assert code == 0, running.logs()


@pytest.fixture(scope="module")
def base(console_stack: tuple[Stack, Path]) -> str:
    return console_stack[0].url


@pytest.fixture(scope="module")
def http_api(console_stack: tuple[Stack, Path]) -> Http:
    stack = console_stack[0]
    return Http(stack.url, stack.api_key)


@pytest.fixture(scope="module")
def redis_client(console_stack: tuple[Stack, Path]) -> Iterator[redis.Redis]:
    url = (console_stack[1] / "redis-url").read_text().strip()
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def admin(browser: Browser, base: str, http_api: Http) -> Iterator[Console]:
    console = sign_in(browser, base, http_api.key)
    yield console
    violations = console.policy_violations()
    console.close()
    assert not violations, violations


def _shot(console: Console, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        console.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def _job(tenant: str, collection: str, state: JobState, created: datetime, n: int = 0) -> Job:
    return Job(
        id=jobs.new_job_id(),
        tenant=tenant,
        collection=collection,
        kind=JobKind.INGEST,
        state=state,
        priority=Priority.NORMAL,
        documents=10 + n % 90,
        embedded=0 if state is JobState.QUEUED else 10 + n % 90,
        batch_id=f"b{n}",
        created_at=created,
        updated_at=created,
        error="embedder gave up" if state in (JobState.FAILED, JobState.DEAD) else None,
        task=Task(queue="embed", arguments={"op": "embed_batch", "collection": collection, "batch_id": f"b{n}"}),
    )


def test_sign_in_create_ingest_watch_progress_and_search(admin: Console, http_api: Http) -> None:
    page = admin.page
    # The key is in this tab's session storage, nowhere in the URL, and no cookie is set.
    assert page.evaluate("sessionStorage.getItem('semaflow.key')") == http_api.key
    assert http_api.key not in page.url
    assert admin.context.cookies() == []
    expect(page.locator("#who")).to_contain_text("admin")

    # Create a collection from the Collections page.
    admin.go("collections")
    page.get_by_label("New collection").fill("console-docs")
    page.get_by_role("button", name="Create").click()
    admin.wait_ready("collections")
    expect(page.get_by_role("heading", name="Collection console-docs")).to_be_visible()

    # Ingest from its page: the console follows the job until its bar reaches 100 %.
    docs = corpus(40, seed=7, prefix="cd")
    lighthouse = "a lighthouse keeper watches the stormy harbour"
    docs.append({"id": "lighthouse", "text": lighthouse, "metadata": {"topic": "sea"}})
    page.get_by_label("Documents (JSON array)").fill(json.dumps(docs))
    page.get_by_role("button", name="Add documents").click()
    admin.wait_ready("jobs")
    job_id = page.url.rsplit("/", 1)[1]
    assert job_id.startswith("job_")
    bar = page.locator(f"progress[data-job='{job_id}']")
    expect(bar).to_have_attribute("value", "100", timeout=120_000)
    expect(page.locator(f"[data-pct='{job_id}']")).to_have_text("100 %")
    expect(page.locator("#job .badge").first).to_have_text("succeeded")
    _shot(admin, "job")

    # Search: hits with their text, score and metadata.
    admin.go("collections/console-docs")
    expect(page.locator("#documents")).to_have_text("41")
    page.get_by_label("Query").fill("lighthouse in a storm by the harbour")
    page.get_by_role("button", name="Search").click()
    first = page.locator("#hits li.hit").first
    expect(first).to_contain_text("lighthouse")
    expect(first).to_contain_text("score")
    expect(first).to_contain_text('"topic": "sea"')
    expect(first.locator(".hit-text")).to_have_text(lighthouse)
    # Its versions: the live one first, with time and size.
    expect(page.get_by_role("table", name="Versions").locator("tbody tr").first).to_contain_text("live")
    _shot(admin, "collection")


def test_cancel_one_queued_job_then_all_matching_after_seeing_the_count(
    admin: Console, http_api: Http, redis_client: redis.Redis
) -> None:
    # Given queued jobs of a collection no worker will reach (their records only)
    tenant = http_api.ok("GET", "/v1/me")["tenant"]
    now = datetime.now(UTC)
    one = _job(tenant, "console-queue", JobState.QUEUED, now)
    rest = [_job(tenant, "console-bulk", JobState.QUEUED, now - timedelta(seconds=n + 1), n) for n in range(3)]
    rest[2] = rest[2].model_copy(update={"priority": Priority.LOW})
    jobs.create_many(redis_client, [one, *rest])
    page = admin.page

    # One, from its page
    admin.go(f"jobs/{one.id}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job .badge").first).to_have_text("cancelled")
    assert http_api.ok("GET", f"/v1/jobs/{one.id}")["state"] == "cancelled"

    # Filtered by priority (the form's own select), then all matching a filter, after the console shows how many
    admin.go("jobs?collection=console-bulk")
    page.get_by_label("Priority").select_option("low")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("table", name="Jobs").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_role("table", name="Jobs").locator("tbody tr")).to_contain_text("low")
    admin.go("jobs?collection=console-bulk&state=queued")
    expect(page.get_by_role("table", name="Jobs").locator("tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Cancel all matching").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Cancel 3 jobs")
    _shot(admin, "jobs-bulk-confirm")
    dialog.get_by_role("button", name="Cancel all matching").click()
    expect(page.locator("#toast")).to_contain_text("Cancel: 3 jobs")
    for job in rest:
        assert http_api.ok("GET", f"/v1/jobs/{job.id}")["state"] == "cancelled"


def test_replay_a_dead_letter_and_retry_a_failed_delivery(admin: Console, http_api: Http) -> None:
    sink = FlakySink()
    try:
        # Given an endpoint that fails every attempt: two test events exhaust their two attempts each
        endpoint = http_api.ok("POST", "/v1/webhooks", {"url": sink.url, "event_types": ["collection.deleted"]})
        first = http_api.ok("POST", f"/v1/webhooks/{endpoint['id']}/test")
        second = http_api.ok("POST", f"/v1/webhooks/{endpoint['id']}/test")
        for delivery in (first, second):
            http_api.until(f"/v1/deliveries/{delivery['id']}", lambda d: d["dead_letter"] is not None)
        letter_id = http_api.ok("GET", f"/v1/deliveries/{first['id']}")["dead_letter"]
        page = admin.page

        # The endpoint's page says it is failing
        admin.go(f"webhooks/{endpoint['id']}")
        expect(page.locator("dd").first).to_contain_text("failing")
        _shot(admin, "webhook")

        # The dead letter, inspected and replayed from the Dead letters page
        admin.go("dead-letters")
        row = page.get_by_role("row").filter(has_text=letter_id[:16])
        row.get_by_role("button", name=letter_id[:16]).click()
        expect(page.get_by_role("dialog")).to_contain_text("Arguments")
        _shot(admin, "dead-letter")
        page.get_by_role("dialog").get_by_role("button", name="Close").click()
        row.get_by_role("button", name="Replay").click()
        expect(page.locator("#toast")).to_contain_text(f"Replayed {letter_id}")
        assert http_api.call("GET", f"/v1/dead-letters/{letter_id}")[0] == 404

        # The other delivery, retried from the endpoint's delivery log once the receiver is back
        sink.accept.set()
        admin.go(f"webhooks/{endpoint['id']}")
        delivery_row = page.get_by_role("row").filter(has_text=second["id"][:16])
        expect(delivery_row).to_contain_text("500")
        delivery_row.get_by_role("button", name="Retry").click()
        expect(page.locator("#toast")).to_contain_text(f"Retrying {second['id']}")
        http_api.until(f"/v1/deliveries/{second['id']}", lambda d: d["state"] == "succeeded")
        # Every attempt (two for each test event, the replayed one's, the retried one's) shows in the activity
        # the Overview charts.
        assert sum(http_api.ok("GET", "/v1/activity?minutes=10")["deliveries"]) >= 5
    finally:
        sink.close()


def test_trigger_a_schedule(admin: Console, http_api: Http) -> None:
    page = admin.page
    admin.go("schedules")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="stats", exact=True))
    row.get_by_role("button", name="Trigger").click()
    expect(page.locator("#toast")).to_contain_text("Triggered stats")
    found = http_api.until(
        "/v1/schedules",
        lambda a: any(s["name"] == "stats" and s["last_run"] and s["last_run"]["manual"] for s in a["schedules"]),
    )
    assert found
    admin.go("schedules")
    expect(row).to_contain_text("manual")
    _shot(admin, "schedules")


def test_a_key_is_shown_once_revoked_and_its_tenants_quotas_set(admin: Console, http_api: Http) -> None:
    page = admin.page
    admin.go("keys")
    create = page.get_by_role("form", name="Create a key")
    create.get_by_label("Tenant").fill("console-tenant")
    create.get_by_label("Role").select_option("reader")
    create.get_by_label("Name").fill("made in the console")
    create.get_by_role("button", name="Create key").click()
    made = page.locator("#new-key")
    expect(made).to_have_text(re.compile(r"^sf_"))
    key = made.inner_text()
    me = http_api.ok("GET", "/v1/me", key=key)
    assert (me["tenant"], me["role"]) == ("console-tenant", "reader")
    _shot(admin, "keys")

    row = page.get_by_role("row").filter(has_text=me["key_id"])
    row.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    assert http_api.call("GET", "/v1/me", key=key)[0] == 401

    limits = page.get_by_role("form", name="Show rate limits")
    limits.get_by_label("Tenant").fill("console-tenant")
    limits.get_by_role("button", name="Show limits").click()
    page.get_by_label(re.compile("^Own quotas")).fill('{"per_hour": 123}')
    page.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#toast")).to_contain_text("Rate limits of console-tenant saved")
    assert http_api.ok("GET", "/v1/tenants/console-tenant/rate-limits")["effective"]["per_hour"] == 123


def test_a_reader_sees_no_write_action_and_a_forced_write_is_refused(
    browser: Browser, base: str, http_api: Http
) -> None:
    tenant = http_api.ok("GET", "/v1/me")["tenant"]
    reader = http_api.ok("POST", "/v1/keys", {"tenant": tenant, "role": "reader", "name": "console-reader"})["key"]
    console = sign_in(browser, base, reader)
    try:
        page = console.page
        expect(page.locator("#who")).to_contain_text("reader")
        expect(page.get_by_role("link", name="Schedules")).to_be_hidden()
        expect(page.get_by_role("link", name="Keys")).to_be_hidden()
        for route in ("overview", "collections", "collections/console-docs", "jobs", "dead-letters", "webhooks"):
            console.go(route)
            assert page.locator("[data-write]").count() == 0, route
            for verb in ("Create", "Cancel", "Retry", "Replay", "Delete", "Add documents", "Roll back", "Trigger"):
                assert page.get_by_role("button", name=verb).count() == 0, (route, verb)
        # The API refuses what the page does not offer.
        status = page.evaluate(
            """async () => (await fetch("/v1/collections/reader-was-here", {method: "PUT",
                headers: {Authorization: `Bearer ${sessionStorage.getItem("semaflow.key")}`}})).status"""
        )
        assert status == 403
        assert not console.policy_violations(), console.policy_violations()
    finally:
        console.close()


PAGES = ("overview", "collections", "collections/console-docs", "jobs", "dead-letters", "webhooks", "schedules", "keys")


def test_every_page_has_no_serious_accessibility_violation(browser: Browser, base: str, http_api: Http) -> None:
    # axe-core is injected as an inline script, which the console's policy rightly refuses: this context
    # bypasses the policy (the other tests run under it and fail on any violation report).
    console = sign_in(browser, base, http_api.key, bypass_csp=True)
    try:
        endpoint = http_api.ok("GET", "/v1/webhooks")["webhooks"]
        routes = [*PAGES]
        if endpoint:
            routes.append(f"webhooks/{endpoint[0]['id']}")
        listed = http_api.ok("GET", "/v1/jobs?limit=1")["jobs"]
        if listed:
            routes.append(f"jobs/{listed[0]['id']}")
        found: dict[str, Any] = {}
        for route in routes:
            console.go(route)
            violations = console.axe_violations()
            if violations:
                found[route] = violations
            _shot(console, route.split("/")[0] + ("-detail" if "/" in route else ""))
        assert not found, found
    finally:
        console.close()


def test_pages_render_their_first_page_of_data_with_100k_jobs_and_10k_dead_letters(
    browser: Browser, base: str, http_api: Http, redis_client: redis.Redis
) -> None:
    # Given a tenant with 100,000 jobs and 10,000 dead letters, stored with the records' own functions
    tenant = f"load{uuid.uuid4().hex[:6]}"
    key = http_api.ok("POST", "/v1/keys", {"tenant": tenant, "role": "admin", "name": "load"})["key"]
    now = datetime.now(UTC)
    # 11 states against 20 collections: one job in 220 is a queued one of a given collection.
    states = [JobState.SUCCEEDED] * 8 + [JobState.FAILED, JobState.CANCELLED, JobState.QUEUED]
    started = time.perf_counter()
    jobs.create_many(
        redis_client,
        (
            _job(tenant, f"c{n % 20}", states[n % len(states)], now - timedelta(seconds=n), n)
            for n in range(JOBS_SEEDED)
        ),
    )
    letters = (
        deadletters.new_letter(
            tenant,
            "embed",
            "embed_batch",
            error=f"RuntimeError: batch {n} could not be embedded",
            attempts=5,
            arguments={"op": "embed_batch", "collection": f"c{n % 20}", "batch_id": f"b{n}"},
            job_id=None,
            collection=f"c{n % 20}",
        )
        for n in range(LETTERS_SEEDED)
    )
    deadletters.store_many(redis_client, letters, retention_s=86_400)
    seeded_s = time.perf_counter() - started
    assert redis_client.zcard(keys.tenant_jobs(tenant)) == JOBS_SEEDED

    console = sign_in(browser, base, key)
    figures: dict[str, list[float]] = {}
    try:
        page = console.page
        for route in LOAD_ROUTES:
            figures[route] = sorted(console.go(route) for _ in range(3))
            if route.startswith("jobs"):
                # A full first page of 25 where one job in 11 or 20 matches; a short one (read budget spent)
                # where fewer do; in every case a cursor to go on with.
                rows = page.get_by_role("table", name="Jobs").locator("tbody tr")
                if route in SPARSE:
                    expect(rows.first).to_be_visible()
                else:
                    expect(rows).to_have_count(25)
                expect(page.get_by_role("button", name="Next")).to_be_enabled()
            if route == "dead-letters":
                expect(page.get_by_role("table", name="Dead letters").locator("tbody tr")).to_have_count(25)
                page.get_by_role("button", name="Next").click()
                expect(page.get_by_text("Page 2")).to_be_visible()
        assert not console.policy_violations(), console.policy_violations()
    finally:
        console.close()
    report = "\n".join(
        f"  {route:<32} median {t[1] * 1000:5.0f} ms  max {t[2] * 1000:5.0f} ms" for route, t in figures.items()
    )
    print(f"\n{JOBS_SEEDED} jobs, {LETTERS_SEEDED} dead letters (seeded in {seeded_s:.1f} s); load to data:")
    print(report)
