"""Indexer service: consumes the ``index`` queue and publishes manifests."""

from __future__ import annotations

from services.indexer import actors
from services.indexer.publishing import Publisher
from shared import tasks
from shared.config import Settings
from shared.storage import ObjectStore, open_store
from shared.telemetry import configure_logging
from shared.worker import WorkerService, new_worker_service

NAME = "indexer"


def build(settings: Settings, *, store: ObjectStore | None = None) -> WorkerService:
    """Wire settings to Redis, the store and the actors."""
    service = new_worker_service(NAME, settings, settings.require_redis_url(), {tasks.INDEX_QUEUE})
    publisher = Publisher(service.client, store or open_store(settings))
    actors.declare(service.broker, service.client, publisher, settings)
    return service


def main() -> None:
    """Run the indexer until SIGTERM."""
    settings = Settings()
    configure_logging(NAME, level=settings.log_level, json=settings.log_json)
    build(settings).run_forever()
