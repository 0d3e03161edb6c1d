"""Per-key rate limits on a real Redis: headers on every answer, 429 with Retry-After, exact under concurrency."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_aiohttp import AiohttpClient

from semaflow.cli import dev_key
from services.gateway.main import build as build_gateway
from shared.config import Settings
from shared.constants import DEV_TENANT
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.records import apikeys, ratelimits
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Client

VECTOR = [1.0] + [0.0] * 383
ClientFactory = Callable[..., Coroutine[Any, Any, Client]]


@pytest.fixture
def make_client(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder
) -> ClientFactory:
    """A gateway client with rate limits on, at the quotas given (the others unlimited unless given)."""

    async def create(**quotas: int) -> Client:
        fields: dict[str, Any] = {
            "rate_limit_enabled": True,
            "rate_limit_per_day": 0,
            "rate_limit_per_hour": 0,
            "rate_limit_bulk_per_minute": 0,
            "rate_limit_single_per_minute": 0,
            "rate_limit_search_per_minute": 0,
            "rate_limit_search_per_hour": 0,
            "rate_limit_search_per_day": 0,
            "rate_limit_read_per_minute": 0,
            "rate_limit_read_per_hour": 0,
        }
        fields.update({f"rate_limit_{name}": value for name, value in quotas.items()})
        app = build_gateway(settings.model_copy(update=fields), store=store, encoder_loader=lambda: encoder)
        return await aiohttp_client(app)

    return create


@pytest.fixture
def key(redis_client: redis.Redis) -> str:
    created = apikeys.new_key()
    apikeys.store(redis_client, created, "acme", Role.ADMIN)
    return created


@pytest.fixture
async def default_client(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder
) -> AsyncIterator[Client]:
    """The gateway with the default quotas."""
    app = build_gateway(
        settings.model_copy(update={"rate_limit_enabled": True}), store=store, encoder_loader=lambda: encoder
    )
    yield await aiohttp_client(app)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _items(header: str) -> dict[str, dict[str, int]]:
    """A structured-field list of ``"name";k=v;...`` items, by name."""
    out = {}
    for item in header.split(","):
        name, *params = item.strip().split(";")
        assert re.fullmatch(r'"[a-z-]+"', name), item
        out[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return out


async def test_every_answer_carries_the_policy_and_the_remaining_quota(default_client: Client, key: str) -> None:
    resp = await default_client.get("/v1/collections", headers=_auth(key))
    assert resp.status == 200
    policy = _items(resp.headers["RateLimit-Policy"])
    assert policy == {
        "single-minute": {"q": 30, "w": 60},
        "hour": {"q": 100, "w": 3600},
        "day": {"q": 1000, "w": 86400},
    }
    state = _items(resp.headers["RateLimit"])
    assert state["single-minute"]["r"] == 29 and state["hour"]["r"] == 99 and state["day"]["r"] == 999
    assert all(0 < s["t"] <= policy[name]["w"] for name, s in state.items())

    # An error answer carries them too (and was counted).
    missing = await default_client.get("/v1/collections/nope", headers=_auth(key))
    assert missing.status == 404
    assert _items(missing.headers["RateLimit"])["hour"]["r"] == 98

    search = await default_client.post("/v1/collections/nope/search", json={"vector": VECTOR}, headers=_auth(key))
    assert set(_items(search.headers["RateLimit-Policy"])) == {"search-minute", "search-hour", "search-day"}
    assert _items(search.headers["RateLimit-Policy"])["search-minute"]["q"] == 120


async def test_a_spent_window_answers_429_with_retry_after_and_costs_nothing(
    make_client: ClientFactory, key: str
) -> None:
    client = await make_client(single_per_minute=3, per_hour=10)
    for _ in range(3):
        assert (await client.get("/v1/collections", headers=_auth(key))).status == 200
    refused = await client.get("/v1/collections", headers=_auth(key))
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    body = await refused.json(content_type=None)
    assert "single-minute" in body["detail"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    state = _items(refused.headers["RateLimit"])
    assert state["single-minute"]["r"] == 0
    # Refused requests are not counted against the other windows.
    for _ in range(3):
        assert (await client.get("/v1/collections", headers=_auth(key))).status == 429
    assert _items((await client.get("/v1/collections", headers=_auth(key))).headers["RateLimit"])["hour"]["r"] == 7


async def test_searches_draw_only_on_the_search_budget(make_client: ClientFactory, key: str) -> None:
    client = await make_client(per_hour=2, search_per_minute=5)
    assert (await client.put("/v1/collections/docs", headers=_auth(key))).status == 201
    for _ in range(5):
        resp = await client.post("/v1/collections/docs/search", json={"vector": VECTOR}, headers=_auth(key))
        assert resp.status == 200
    assert (await client.post("/v1/collections/docs/search", json={"vector": VECTOR}, headers=_auth(key))).status == 429
    # The overall hour still has one request left after the PUT.
    assert (await client.get("/v1/collections", headers=_auth(key))).status == 200
    assert (await client.get("/v1/collections", headers=_auth(key))).status == 429


async def test_bulk_ingest_has_its_own_minute_budget(make_client: ClientFactory, key: str) -> None:
    client = await make_client(bulk_per_minute=2, single_per_minute=100)
    assert (await client.put("/v1/collections/docs", headers=_auth(key))).status == 201
    batch = {"documents": [{"id": "a", "text": "x"}]}
    for _ in range(2):
        assert (await client.post("/v1/collections/docs/documents", json=batch, headers=_auth(key))).status == 202
    assert (await client.post("/v1/collections/docs/documents", json=batch, headers=_auth(key))).status == 429
    assert (await client.post("/v1/jobs:cancel", json={"collection": "docs"}, headers=_auth(key))).status == 429
    assert (await client.get("/v1/collections/docs", headers=_auth(key))).status == 200


async def test_limits_are_per_key(make_client: ClientFactory, key: str, redis_client: redis.Redis) -> None:
    client = await make_client(per_hour=1)
    other = apikeys.new_key()
    apikeys.store(redis_client, other, "acme", Role.READER)
    assert (await client.get("/v1/collections", headers=_auth(key))).status == 200
    assert (await client.get("/v1/collections", headers=_auth(key))).status == 429
    assert (await client.get("/v1/collections", headers=_auth(other))).status == 200


async def test_an_admin_sets_a_tenants_own_quotas(
    make_client: ClientFactory, key: str, redis_client: redis.Redis
) -> None:
    client = await make_client(per_hour=100)
    tenant_key = apikeys.new_key()
    apikeys.store(redis_client, tenant_key, "globex", Role.WRITER)
    resp = await client.put("/v1/tenants/globex/rate-limits", json={"per_hour": 2}, headers=_auth(key))
    assert resp.status == 200, await resp.text()
    limits = await resp.json()
    assert limits["overrides"] == {"per_hour": 2} and limits["effective"]["per_hour"] == 2
    assert limits["defaults"]["per_hour"] == 100

    for status in (200, 200, 429):
        assert (await client.get("/v1/collections", headers=_auth(tenant_key))).status == status
    # 0 lifts the limit for this tenant; null returns it to the default.
    await client.put("/v1/tenants/globex/rate-limits", json={"per_hour": 0}, headers=_auth(key))
    assert (await client.get("/v1/collections", headers=_auth(tenant_key))).status == 200
    resp = await client.put("/v1/tenants/globex/rate-limits", json={"per_hour": None}, headers=_auth(key))
    assert (await resp.json())["overrides"] == {}
    got = await client.get("/v1/tenants/globex/rate-limits", headers=_auth(key))
    assert (await got.json())["effective"]["per_hour"] == 100

    bad = await client.put("/v1/tenants/globex/rate-limits", json={"per_hour": -1}, headers=_auth(key))
    assert bad.status == 422
    # A whole number written as 85.0 is the integer its schema promises; 85.5 and "85" are not.
    whole = await client.put("/v1/tenants/globex/rate-limits", json={"per_day": 85.0}, headers=_auth(key))
    assert whole.status == 200 and (await whole.json())["overrides"] == {"per_day": 85}
    for value in (85.5, "85"):
        refused = await client.put("/v1/tenants/globex/rate-limits", json={"per_day": value}, headers=_auth(key))
        assert refused.status == 422, value


async def test_disabled_limits_admit_everything_and_send_no_headers(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, key: str
) -> None:
    app = build_gateway(settings, store=store, encoder_loader=lambda: encoder)  # the fixture's: limits off
    client = await aiohttp_client(app)
    for _ in range(40):
        resp = await client.get("/v1/collections", headers=_auth(key))
        assert resp.status == 200
    assert "RateLimit" not in resp.headers and "RateLimit-Policy" not in resp.headers


def _seconds_into_day(redis_client: redis.Redis) -> int:
    now, _ = redis_client.time()
    return int(now) % 86_400


async def test_fifty_concurrent_clients_against_a_limit_of_100_get_exactly_100_admitted(
    make_client: ClientFactory, key: str, redis_client: redis.Redis
) -> None:
    # The day window is the only limit; keep clear of its boundary so one window holds the whole run.
    if _seconds_into_day(redis_client) > 86_400 - 60:
        await asyncio.sleep(61)
    client = await make_client(per_day=100)
    statuses: list[int] = []

    async def one_client() -> None:
        for _ in range(4):
            resp = await client.get("/v1/collections", headers=_auth(key))
            statuses.append(resp.status)
            await resp.release()

    await asyncio.gather(*(one_client() for _ in range(50)))
    assert len(statuses) == 200
    assert statuses.count(200) == 100
    assert statuses.count(429) == 100


async def test_reads_draw_only_on_the_read_budget(make_client: ClientFactory, key: str) -> None:
    client = await make_client(per_hour=1, read_per_minute=3)
    for path in ("/v1/jobs", "/v1/queues", "/v1/dead-letters"):
        resp = await client.get(path, headers=_auth(key))
        assert resp.status == 200, path
        assert set(_items(resp.headers["RateLimit-Policy"])) == {"read-minute"}
    refused = await client.get("/v1/jobs/job_nope", headers=_auth(key))
    assert refused.status == 429 and "read-minute" in (await refused.json(content_type=None))["detail"]
    # The write budget was not touched: its one request of the hour is still there.
    assert (await client.put("/v1/collections/docs", headers=_auth(key))).status == 201
    assert (await client.put("/v1/collections/more", headers=_auth(key))).status == 429


async def test_the_read_budget_outlasts_polling_every_second(default_client: Client, key: str) -> None:
    resp = await default_client.get("/v1/jobs", headers=_auth(key))
    policy = _items(resp.headers["RateLimit-Policy"])
    assert policy == {"read-minute": {"q": 600, "w": 60}, "read-hour": {"q": 20_000, "w": 3600}}
    assert policy["read-minute"]["q"] >= 60 and policy["read-hour"]["q"] >= 3600


async def test_the_development_tenant_is_never_limited_while_another_tenant_is(
    default_client: Client, key: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    dev = dev_key(redis_client, tmp_path)
    assert ratelimits.overrides(redis_client, DEV_TENANT) == dict.fromkeys(ratelimits.FIELDS, 0)
    job_statuses, other_statuses = [], []
    for _ in range(200):
        job_statuses.append((await default_client.get("/v1/jobs/job_nope", headers=_auth(dev))).status)
        resp = await default_client.get("/v1/collections", headers=_auth(dev))
        assert resp.status == 200 and "RateLimit" not in resp.headers
    for _ in range(40):
        other_statuses.append((await default_client.get("/v1/collections", headers=_auth(key))).status)
    assert set(job_statuses) == {404}
    assert other_statuses.count(429) == 10  # the default 30 a minute


def test_the_development_tenants_own_quotas_are_kept(redis_client: redis.Redis, tmp_path: Path) -> None:
    ratelimits.update(redis_client, DEV_TENANT, ratelimits.QuotaOverrides(per_hour=5))
    dev_key(redis_client, tmp_path)
    assert ratelimits.overrides(redis_client, DEV_TENANT) == {"per_hour": 5}


async def test_reading_documents_draws_on_the_read_budget(make_client: ClientFactory, key: str) -> None:
    client = await make_client(per_hour=1, read_per_minute=2)
    assert (await client.put("/v1/collections/docs", headers=_auth(key))).status == 201  # the hour's one write
    listed = await client.get("/v1/collections/docs/documents", headers=_auth(key))
    assert listed.status == 200 and set(_items(listed.headers["RateLimit-Policy"])) == {"read-minute"}
    one = await client.get("/v1/collections/docs/documents/nope", headers=_auth(key))
    assert one.status == 404 and set(_items(one.headers["RateLimit-Policy"])) == {"read-minute"}
    refused = await client.get("/v1/collections/docs/documents", headers=_auth(key))
    assert refused.status == 429 and "read-minute" in (await refused.json(content_type=None))["detail"]
