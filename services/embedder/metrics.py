"""The embedder's own Prometheus metrics (beside the task metrics every worker has)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from shared.index.backend_choice import Choice


class EmbedMetrics:
    """Batches and documents embedded, how long a batch takes, and the backend running the model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter("semaflow_embed_batches", "Batches embedded.", registry=registry)
        self.documents = Counter("semaflow_embed_documents", "Documents embedded.", registry=registry)
        self.batch_seconds = Histogram(
            "semaflow_embed_batch_seconds",
            "Time to embed one stored batch (read, encode, write the vectors).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
            registry=registry,
        )
        self.backend = Gauge(
            "semaflow_embed_backend",
            "1 for the backend running the embedding model (chosen at start-up with SEMAFLOW_EMBEDDER_BACKEND).",
            ["backend"],
            registry=registry,
        )
        self.probe_cpu_seconds = Gauge(
            "semaflow_embed_probe_cpu_seconds",
            "CPU seconds each backend took for the start-up probe texts (best round), when auto compared them.",
            ["backend"],
            registry=registry,
        )

    def record_choice(self, choice: Choice, candidate: str = "openvino") -> None:
        """Export the backend in use and, when both were timed, each one's probe CPU time."""
        self.backend.labels(backend=choice.backend).set(1)
        if choice.torch_cpu_s is not None and choice.candidate_cpu_s is not None:
            self.probe_cpu_seconds.labels(backend="torch").set(choice.torch_cpu_s)
            self.probe_cpu_seconds.labels(backend=candidate).set(choice.candidate_cpu_s)
