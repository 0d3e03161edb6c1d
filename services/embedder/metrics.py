"""The embedder's own Prometheus metrics (beside the task metrics every worker has)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class EmbedMetrics:
    """Batches and documents embedded, and how long a batch takes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter("semaflow_embed_batches", "Batches embedded.", registry=registry)
        self.documents = Counter("semaflow_embed_documents", "Documents embedded.", registry=registry)
        self.batch_seconds = Histogram(
            "semaflow_embed_batch_seconds",
            "Time to embed one stored batch (read, encode, write the vectors).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
            registry=registry,
        )
