"""Collections spread over gateway groups: each gateway loads and answers only the collections its group
serves (``SEMAFLOW_GATEWAY_COLLECTIONS``), writes work on any, and a misrouted read says where to go."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from services.gateway.appkeys import REGISTRY
from services.gateway.main import build as build_gateway
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from tests.integration.conftest import Api

pytestmark = pytest.mark.usefixtures("workers")


async def _gateway(aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder,
                   key: str, serves: str) -> Api:  # fmt: skip
    app = build_gateway(settings.model_copy(update={"gateway_collections": serves}), store=store,
                        encoder_loader=lambda: encoder)  # fmt: skip
    return Api(await aiohttp_client(app), key)


async def _ingest_and_wait(api: Api, collection: str, docs: list[dict[str, Any]]) -> None:
    await api.client.put(f"/v1/collections/{collection}", headers=api.auth)
    resp = await api.client.post(f"/v1/collections/{collection}/documents", json={"documents": docs}, headers=api.auth)
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    for _ in range(600):
        job = await (await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth)).json()
        if job["state"] == "succeeded":
            return
        assert job["state"] not in ("failed", "dead"), job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def test_each_group_answers_its_own_collections_and_points_elsewhere_for_the_rest(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, api_key: str
) -> None:
    # Given two gateway groups on one Redis and store: one serving eu-* collections, one the rest,
    eu = await _gateway(aiohttp_client, settings, store, encoder, api_key, "*/eu-*")
    rest = await _gateway(aiohttp_client, settings, store, encoder, api_key, "*/us-*, */shared")
    # When documents are written through either gateway,
    await _ingest_and_wait(rest, "eu-docs", [{"id": "e1", "text": "a castle on the Rhine"}])
    await _ingest_and_wait(eu, "us-docs", [{"id": "u1", "text": "a canyon in Arizona"}])

    # Then each gateway searches and reads back its own group's collections,
    for api, name, doc in ((eu, "eu-docs", "e1"), (rest, "us-docs", "u1")):
        resp = await api.client.post(f"/v1/collections/{name}/search", json={"query": "landmark"}, headers=api.auth)
        assert resp.status == 200 and [h["id"] for h in (await resp.json())["results"]] == [doc]
        resp = await api.client.get(f"/v1/collections/{name}/documents/{doc}", headers=api.auth)
        assert resp.status == 200
    # and answers 421 for the other group's, naming what it serves (nothing of it loaded),
    for api, name in ((eu, "us-docs"), (rest, "eu-docs")):
        for method, path, body in (
            ("POST", f"/v1/collections/{name}/search", {"query": "landmark"}),
            ("GET", f"/v1/collections/{name}/documents", None),
        ):
            resp = await api.client.request(method, path, json=body, headers=api.auth)
            problem = await resp.json(content_type=None)
            assert resp.status == 421, problem
            assert "served by another gateway group" in problem["detail"]
    await asyncio.sleep(0.5)  # time for either follower to (wrongly) load the other group's collection
    assert eu.client.app[REGISTRY].get("acme", "us-docs") is None
    assert rest.client.app[REGISTRY].get("acme", "eu-docs") is None
    # while what every gateway answers from Redis (the collection, its jobs) works on both.
    for api in (eu, rest):
        resp = await api.client.get("/v1/collections/us-docs", headers=api.auth)
        assert resp.status == 200 and (await resp.json())["documents"] == 1
