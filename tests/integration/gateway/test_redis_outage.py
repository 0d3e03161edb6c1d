"""A Redis outage seen through the gateway's HTTP API: searches answer from the loaded indexes, writes 503.

Each test has a Redis server of its own, stopped and started again on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog.testing
from pytest_aiohttp import AiohttpClient

from semaflow.redis_server import RedisServer
from services.gateway.main import build as build_gateway
from shared.config import Settings
from shared.constants import REDIS_RETRY_AFTER_S
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.records import apikeys
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Client, running_workers
from tests.peers import eventually


@dataclass
class RestartableRedis:
    """A Redis server that a test stops and starts again on the same port, with the same data."""

    directory: Path
    server: RedisServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = RedisServer.start(self.directory, port=self.server.port)


@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    directory = tmp_path / "redis"
    restartable = RestartableRedis(directory, RedisServer.start(directory))
    yield restartable
    restartable.stop()


def _unit(i: int) -> list[float]:
    v = [0.0] * 384
    v[i] = 1.0
    return v


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _search(client: Client, key: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/collections/docs/search", json={"vector": _unit(0), "k": 2}, headers=_auth(key))
    return resp.status, await resp.json()


async def _indexed_gateway(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, writer: str
) -> Client:
    """A gateway whose collection ``docs`` holds two documents, published and loaded."""
    client = await aiohttp_client(build_gateway(settings, store=store, encoder_loader=lambda: encoder))
    with running_workers(settings, store, encoder):
        assert (await client.put("/v1/collections/docs", headers=_auth(writer))).status == 201
        docs = [{"id": "x", "vector": _unit(0)}, {"id": "y", "vector": _unit(1)}]
        resp = await client.post("/v1/collections/docs/documents", json={"documents": docs}, headers=_auth(writer))
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["job_id"]

        async def succeeded() -> bool:
            job = await (await client.get(f"/v1/jobs/{job_id}", headers=_auth(writer))).json()
            assert job["state"] in ("queued", "running", "succeeded"), job
            return bool(job["state"] == "succeeded")

        await eventually(succeeded, timeout_s=60)
    return client


def _outage_settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": tmp_path,
        "worker_poll_ms": 20,
        "min_backoff_ms": 50,
        "max_backoff_ms": 200,
        "max_retries": 2,
        "rate_limit_enabled": True,
        "gateway_redis_timeout_s": 0.5,
    }
    fields.update(overrides)
    return Settings(**fields)


async def test_searches_answer_through_a_redis_outage_and_writes_wait_for_it(
    aiohttp_client: AiohttpClient, outage_redis: RestartableRedis, tmp_path: Path, store: LocalStore, encoder: Encoder
) -> None:
    # Given a gateway with a loaded collection, a reader key it has verified and one it has never seen
    settings = _outage_settings(outage_redis.url, tmp_path)
    admin = redis.Redis.from_url(outage_redis.url)
    writer = apikeys.create(admin, "acme", Role.WRITER)[0]
    reader = apikeys.create(admin, "acme", Role.READER)[0]
    unseen, unseen_record = apikeys.create(admin, "acme", Role.READER)
    admin.close()
    client = await _indexed_gateway(aiohttp_client, settings, store, encoder, writer)
    status, before = await _search(client, reader)
    assert status == 200 and [h["id"] for h in before["results"]] == ["x", "y"]
    await asyncio.sleep(1.5)  # Redis appends to its AOF every second: the keys outlive the restart

    # When Redis goes away
    await asyncio.to_thread(outage_redis.stop)

    # Then the verified key still searches the loaded index, and gets the same answer
    status, during = await _search(client, reader)
    assert status == 200, during
    assert during["results"] == before["results"] and during["index_version"] == before["index_version"]
    # ...a key never verified cannot be told valid or not: 503, not 401
    resp = await client.post("/v1/collections/docs/search", json={"vector": _unit(0)}, headers=_auth(unseen))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == str(REDIS_RETRY_AFTER_S)
    # ...writes answer 503 with Retry-After, as a problem document
    docs = {"documents": [{"id": "z", "vector": _unit(2)}]}
    resp = await client.post("/v1/collections/docs/documents", json=docs, headers=_auth(writer))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == str(REDIS_RETRY_AFTER_S)
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["title"] == "Redis unavailable"
    assert problem["type"] == "https://semaflow.dev/problems/redis-unavailable"
    # ...readiness says degraded and why, still 200 so load balancers keep sending searches
    resp = await client.get("/readyz")
    assert resp.status == 200
    ready = await resp.json()
    assert ready["status"] == "degraded"
    assert ready["checks"]["redis"].startswith("unavailable")
    assert ready["checks"]["index"] == "ok"
    assert (await client.get("/healthz")).status == 200

    # When Redis comes back
    await asyncio.to_thread(outage_redis.start)

    # Then everything is as before: ready, writes accepted, the unseen key verified in Redis
    async def ready_again() -> bool:
        return bool((await (await client.get("/readyz")).json())["status"] == "ready")

    await eventually(ready_again, timeout_s=10)
    resp = await client.put("/v1/collections/docs", headers=_auth(writer))
    assert resp.status == 200, await resp.text()
    assert (await _search(client, unseen))[0] == 200
    # ...and a key revoked while Redis answers is refused at once
    admin = redis.Redis.from_url(outage_redis.url)
    assert apikeys.revoke(admin, unseen_record.id)
    admin.close()
    status, refused = await _search(client, unseen)
    assert status == 401, refused


async def test_a_key_is_honoured_from_memory_only_for_the_configured_time(
    aiohttp_client: AiohttpClient, outage_redis: RestartableRedis, tmp_path: Path, store: LocalStore, encoder: Encoder
) -> None:
    # Given a gateway that honours verified keys for 3 s during an outage
    ttl_s = 3.0
    settings = _outage_settings(outage_redis.url, tmp_path, key_cache_ttl_s=ttl_s)
    admin = redis.Redis.from_url(outage_redis.url)
    writer = apikeys.create(admin, "acme", Role.WRITER)[0]
    admin.close()
    client = await _indexed_gateway(aiohttp_client, settings, store, encoder, writer)

    # When the key is verified and Redis then goes away
    assert (await _search(client, writer))[0] == 200
    verified_at = time.monotonic()
    await asyncio.to_thread(outage_redis.stop)

    # Then the key searches until its time is up, and is refused (503) after it
    if time.monotonic() - verified_at < ttl_s - 1:
        assert (await _search(client, writer))[0] == 200
    await asyncio.sleep(max(0.0, ttl_s - (time.monotonic() - verified_at)) + 0.1)
    status, body = await _search(client, writer)
    assert status == 503, body


async def test_the_index_follower_backs_off_through_an_outage_and_logs_its_start_and_end_once(
    aiohttp_client: AiohttpClient, outage_redis: RestartableRedis, tmp_path: Path, store: LocalStore, encoder: Encoder
) -> None:
    # Given a gateway whose index follower is following (its indexes are loaded)
    settings = _outage_settings(outage_redis.url, tmp_path)
    client = await aiohttp_client(build_gateway(settings, store=store, encoder_loader=lambda: encoder))

    async def ready() -> bool:
        return bool((await (await client.get("/readyz")).json())["status"] == "ready")

    await eventually(ready, timeout_s=10)
    with structlog.testing.capture_logs() as logs:
        # When Redis stays away for several of its tries
        await asyncio.to_thread(outage_redis.stop)

        def tries() -> list[MutableMapping[str, Any]]:
            return [e for e in logs if e["event"] in ("index.follow_failed", "index.follow_retry_failed")]

        await eventually(lambda: len(tries()) >= 3, timeout_s=20)
        # ...and comes back
        await asyncio.to_thread(outage_redis.start)
        await eventually(lambda: [e for e in logs if e["event"] == "index.follow_recovered"] or None, timeout_s=40)

    # Then the outage was a warning once, each later try waited twice as long as the one before,
    # and its end is logged once, with the tries that failed
    failed = [e for e in logs if e["event"] == "index.follow_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "warning"
    waits = [e["retry_in_s"] for e in tries()]
    assert waits[:3] == [1.0, 2.0, 4.0]
    assert all(e["log_level"] == "debug" for e in tries()[1:])
    (recovered,) = [e for e in logs if e["event"] == "index.follow_recovered"]
    assert recovered["log_level"] == "info" and recovered["failed_tries"] == len(tries())
    assert (await (await client.get("/readyz")).json())["status"] == "ready"
