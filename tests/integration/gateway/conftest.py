"""The gateway app on a real Redis, optionally with in-process embedder and indexer workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.embedder.main import build as build_embedder
from services.indexer.main import build as build_indexer
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore
from tests.integration.conftest import Api

__all__ = ["Api", "Client", "running_workers"]

Client = TestClient[web.Request, web.Application]


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
