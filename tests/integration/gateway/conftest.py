"""The gateway app on a real Redis, optionally with in-process embedder and indexer workers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from services.embedder.main import build as build_embedder
from services.gateway.main import build as build_gateway
from services.indexer.main import build as build_indexer
from shared import apikeys
from shared.config import Settings
from shared.embedding import Encoder
from shared.storage import LocalStore


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real model, loaded once for the whole run."""
    return Encoder.load()


@dataclass
class Api:
    """An HTTP client for the gateway and the key it authenticates with."""

    client: TestClient  # type: ignore[type-arg]
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def api_key(redis_client: redis.Redis) -> str:
    key = apikeys.new_key()
    apikeys.store(redis_client, key, "acme")
    return key


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, api_key: str
) -> AsyncIterator[Api]:
    app = build_gateway(settings, store=store, encoder_loader=lambda: encoder)
    yield Api(await aiohttp_client(app), api_key)


@contextlib.contextmanager
def running_workers(settings: Settings, store: LocalStore, encoder: Encoder) -> Iterator[None]:
    """Embedder and indexer running in-process on the real Redis broker until the block ends."""
    services = [build_embedder(settings, store=store, encoder=encoder), build_indexer(settings, store=store)]
    running = [(s, *s.start()) for s in services]
    try:
        yield
    finally:
        for service, worker, heartbeat in running:
            service.stop(worker, heartbeat)


@pytest.fixture
def workers(settings: Settings, store: LocalStore, encoder: Encoder) -> Iterator[None]:
    """Embedder and indexer running in-process for the whole test."""
    with running_workers(settings, store, encoder):
        yield
