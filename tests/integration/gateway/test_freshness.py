"""A search answers from the newest published version, even before the gateway heard of it."""

from __future__ import annotations

from typing import Any

import redis
from pytest_aiohttp import AiohttpClient

from services.gateway.main import build as build_gateway
from services.indexer.publishing import Publisher
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.records import apikeys, catalog
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Client
from tests.integration.indexer.staging import stage, unit_vectors


async def _gateway(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, r: redis.Redis, **overrides: object
) -> tuple[Client, dict[str, str]]:
    client = await aiohttp_client(build_gateway(settings.model_copy(update=overrides), store=store))
    key = apikeys.new_key()
    apikeys.store(r, key, "acme", Role.WRITER)
    return client, {"Authorization": f"Bearer {key}"}


async def _search(
    client: Client, auth: dict[str, str], vector: list[float], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/collections/docs/search", json={"vector": vector, "k": 1}, headers={**auth, **(headers or {})}
    )
    assert resp.status == 200, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def _publish_without_an_event(client: redis.Redis, store: LocalStore) -> tuple[str, list[float]]:
    """Make a version live the way the indexer does, but send no ``index.published``: the gateway must notice."""
    record = catalog.get(client, "acme", "docs")
    assert record is not None
    vectors = unit_vectors(3, seed=7)
    stage(store, record, "b1", ["d0", "d1", "d2"], vectors)
    version = Publisher(client, store).add_batch(record, "b1", write_seq=1).version
    assert version is not None
    return version, [float(x) for x in vectors[1]]


async def test_a_version_published_since_the_last_swap_answers_the_next_search(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    client, auth = await _gateway(aiohttp_client, settings, store, redis_client)
    assert (await client.put("/v1/collections/docs", headers=auth)).status == 201
    assert (await _search(client, auth, [1.0] + [0.0] * 383)) == {"results": [], "index_version": None}

    version, vector = await _publish_without_an_event(redis_client, store)

    found = await _search(client, auth, vector)
    assert found["index_version"] == version
    assert [hit["id"] for hit in found["results"]] == ["d1"]


async def test_with_no_wait_the_loaded_version_answers_until_the_swap(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    client, auth = await _gateway(aiohttp_client, settings, store, redis_client, search_freshness_wait_s=0.0)
    assert (await client.put("/v1/collections/docs", headers=auth)).status == 201
    await _search(client, auth, [1.0] + [0.0] * 383)

    _, vector = await _publish_without_an_event(redis_client, store)

    assert (await _search(client, auth, vector)) == {"results": [], "index_version": None}


async def test_a_search_that_accepts_a_stale_answer_is_answered_from_the_loaded_version_at_once(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    client, auth = await _gateway(aiohttp_client, settings, store, redis_client, search_freshness_wait_s=30.0)
    assert (await client.put("/v1/collections/docs", headers=auth)).status == 201
    await _search(client, auth, [1.0] + [0.0] * 383)

    version, vector = await _publish_without_an_event(redis_client, store)

    stale = await _search(client, auth, vector, {"Cache-Control": "max-stale"})
    assert stale == {"results": [], "index_version": None}
    assert (await _search(client, auth, vector))["index_version"] == version  # without it: waited for


async def test_a_version_that_cannot_be_loaded_leaves_the_loaded_one_answering(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    client, auth = await _gateway(aiohttp_client, settings, store, redis_client)
    assert (await client.put("/v1/collections/docs", headers=auth)).status == 201
    await _search(client, auth, [1.0] + [0.0] * 383)
    version, vector = await _publish_without_an_event(redis_client, store)
    record = catalog.get(redis_client, "acme", "docs")
    assert record is not None
    store.delete(record.ref.manifest_key(version))  # the new version's manifest is gone: its load fails

    for _ in range(3):  # the first search's load fails; the next ones do not try again at once
        assert (await _search(client, auth, vector)) == {"results": [], "index_version": None}
