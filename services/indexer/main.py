"""Indexer service: consumes the ``index`` queue and publishes manifests; runs index maintenance."""

from __future__ import annotations

from prometheus_client import Counter

from services.indexer import actors, maintenance
from services.indexer.publishing import Publisher
from shared.config import Settings
from shared.index.approximate import RecallTarget
from shared.index.storage import ObjectStore, open_store
from shared.messaging import tasks
from shared.priority import lower_priority
from shared.runtime import telemetry
from shared.runtime.worker import WorkerService, new_worker_service

NAME = "indexer"


def build(settings: Settings, *, store: ObjectStore | None = None) -> WorkerService:
    """Wire settings to Redis, the store and the actors."""
    queues = {tasks.INDEX_QUEUE, tasks.MAINTENANCE_QUEUE}
    # Maintenance runs on its own worker thread: a long compaction never holds up writes (and vice versa).
    service = new_worker_service(
        NAME, settings, settings.require_redis_url(), queues, dedicated={tasks.MAINTENANCE_QUEUE: 1}
    )
    objects = store or open_store(settings)
    published = Counter("semaflow_index_publishes", "Index versions made live.", registry=service.metrics.registry)
    publisher = Publisher(
        service.client,
        objects,
        published=published,
        lock_ttl_s=settings.collection_lock_ttl_s,
        target=RecallTarget(min_recall=settings.min_recall),
    )
    actors.declare(service.broker, service.client, publisher, settings)
    maintenance.declare(service.broker, service.client, objects, publisher, settings)
    return service


def main() -> None:
    """Run the indexer until SIGTERM."""
    settings = Settings()
    telemetry.configure(NAME, settings)
    lower_priority(settings.background_nice)  # every thread so far; those started later inherit it
    build(settings).run_forever()
