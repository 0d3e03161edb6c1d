"""Embedder service: consumes the ``embed`` queue with the model loaded once per process."""

from __future__ import annotations

from services.embedder import actors
from services.embedder.metrics import EmbedMetrics
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import ObjectStore, open_store
from shared.messaging import tasks
from shared.priority import lower_priority
from shared.runtime import telemetry
from shared.runtime.worker import WorkerService, new_worker_service

NAME = "embedder"


def build(settings: Settings, *, store: ObjectStore | None = None, encoder: Encoder | None = None) -> WorkerService:
    """Wire settings to Redis, the store, the model and the actor (loads the model unless given one)."""
    threads = settings.model_copy(update={"worker_threads": settings.embedder_threads})
    service = new_worker_service(NAME, threads, settings.require_redis_url(), {tasks.EMBED_QUEUE})
    enc = encoder or Encoder.load(
        settings.model_path,
        device=settings.device,
        batch_size=settings.embed_batch_size,
        batch_tokens=settings.embed_batch_tokens,
        backend=settings.embedder_backend,
        cache_dir=settings.model_cache,
    )
    metrics = EmbedMetrics(service.metrics.registry)
    metrics.record_choice(enc.choice)
    actors.declare(service.broker, service.client, store or open_store(settings), enc, settings, metrics)
    return service


def main() -> None:
    """Run the embedder until SIGTERM."""
    settings = Settings()
    telemetry.configure(NAME, settings)
    lower_priority(settings.background_nice)  # every thread so far; those started later inherit it
    build(settings).run_forever()
