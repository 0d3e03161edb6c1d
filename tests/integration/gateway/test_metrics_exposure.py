"""Who sees which series: ``/metrics`` without a key names no tenant or collection; an admin key and the
internal metrics port see every series."""

from __future__ import annotations

import aiohttp
import pytest
import redis
from pytest_aiohttp import AiohttpClient

from services.gateway.appkeys import METRICS_SERVER, SETTINGS
from services.gateway.main import build as build_gateway
from services.indexer import stats
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from shared.records import apikeys
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Api, Client
from tests.peers import eventually

TENANT = "acme-confidential"
COLLECTION = "merger-plans"
SERIES = f'semaflow_index_vectors{{collection="{COLLECTION}",tenant="{TENANT}"}} 0.0'


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def admin_key(redis_client: redis.Redis) -> str:
    return apikeys.create(redis_client, TENANT, Role.ADMIN)[0]


@pytest.fixture
async def measured(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    store: LocalStore,
    encoder: Encoder,
    redis_client: redis.Redis,
    admin_key: str,
) -> Client:
    """A gateway serving its internal metrics on a free port, whose index gauges name a tenant's collection."""
    update = {"stats_refresh_s": 0.1, "metrics_port": 0, "metrics_host": "127.0.0.1"}
    app = build_gateway(settings.model_copy(update=update), store=store, encoder_loader=lambda: encoder)
    client = await aiohttp_client(app)
    assert (await client.put(f"/v1/collections/{COLLECTION}", headers=_auth(admin_key))).status == 201
    stats.refresh(redis_client, store)  # what the indexer's statistics actor runs

    async def gauged() -> bool:
        resp = await client.get("/metrics", headers=_auth(admin_key))
        return SERIES in await resp.text()

    await eventually(gauged, timeout_s=10)
    return client


async def test_metrics_without_a_key_name_no_tenant_and_no_collection(measured: Client) -> None:
    resp = await measured.get("/metrics")

    assert resp.status == 200
    exposition = await resp.text()
    assert TENANT not in exposition and COLLECTION not in exposition
    assert "tenant=" not in exposition and "collection=" not in exposition
    assert "semaflow_index_vectors" not in exposition  # not even an empty family
    # ...and what names no tenant is all there
    assert "semaflow_http_requests_total{" in exposition
    assert "semaflow_redis_up" in exposition
    assert "process_cpu_seconds_total" in exposition


async def test_an_admin_key_sees_every_series(measured: Client, admin_key: str) -> None:
    resp = await measured.get("/metrics", headers=_auth(admin_key))

    assert resp.status == 200
    exposition = await resp.text()
    assert SERIES in exposition
    assert f'semaflow_index_segments{{collection="{COLLECTION}",tenant="{TENANT}"}} 0.0' in exposition


async def test_another_key_is_refused_rather_than_served_fewer_series(
    measured: Client, redis_client: redis.Redis
) -> None:
    reader = apikeys.create(redis_client, TENANT, Role.READER)[0]
    writer = apikeys.create(redis_client, TENANT, Role.WRITER)[0]

    for key in (reader, writer):
        resp = await measured.get("/metrics", headers=_auth(key))
        assert resp.status == 403, await resp.text()
        assert COLLECTION not in await resp.text()
    for header in ("Bearer sf_not-a-key", "Basic dXNlcjpwYXNz"):
        resp = await measured.get("/metrics", headers={"Authorization": header})
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="semaflow"'


async def test_the_internal_metrics_port_serves_every_series(measured: Client) -> None:
    server = measured.app[METRICS_SERVER]

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{server.address}/metrics") as resp:
            assert resp.status == 200
            exposition = await resp.text()
        async with session.get(f"http://{server.address}/healthz") as resp:
            assert resp.status == 200
    assert SERIES in exposition
    assert "semaflow_http_requests_total{" in exposition


async def test_without_a_metrics_port_no_internal_server_runs(api: Api) -> None:
    assert api.client.app[SETTINGS].metrics_port is None
    assert METRICS_SERVER not in api.client.app
