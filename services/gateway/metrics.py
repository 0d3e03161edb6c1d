"""The gateway's Prometheus metrics, made when an app is built, in a registry of that app's own.

A registry per app (not prometheus-client's global one) lets several apps live in one process,
as the tests build them, without their metrics colliding. The whole registry is served on the internal
metrics port (``SEMAFLOW_METRICS_PORT``), and on the public ``/metrics`` to an admin key; without a key,
``/metrics`` leaves out every series labelled with a tenant or collection (:data:`PRIVATE_LABELS`), so
that it does not tell who the tenants are or what their collections are called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from services.gateway.appkeys import METRICS, METRICS_SERVER, SETTINGS
from shared.runtime.metrics import serve_metrics

# Labels whose values name a tenant's own things; only operators see series that carry them.
PRIVATE_LABELS: Final = frozenset({"tenant", "collection"})


class GatewayMetrics:
    """Request, rate-limit and search-cache metrics of one gateway app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "semaflow_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "semaflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "semaflow_rate_limited_requests",
            "Requests refused with 429, by rate-limit category.",
            ["category"],
            registry=self.registry,
        )
        self.cache = Counter(
            "semaflow_search_cache_requests",
            "Search cache look-ups by level (l1 in-process, l2 Redis) and result (hit or miss).",
            ["level", "result"],
            registry=self.registry,
        )
        for level in ("l1", "l2"):
            for result in ("hit", "miss"):
                self.cache.labels(level=level, result=result)
        self.faiss_seconds = Histogram(
            "semaflow_faiss_search_seconds",
            "Time FAISS took to search a collection's live version (every segment, merged top-k).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.query_embedding_seconds = Histogram(
            "semaflow_query_embedding_seconds",
            "Time to embed a search's query text.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.index_swaps = Counter(
            "semaflow_index_swaps", "Index versions this gateway swapped in.", registry=self.registry
        )
        self.cluster = ClusterGauges(self.registry)

    def exposition(self, *, private: bool) -> bytes:
        """The registry in Prometheus' text format; without ``private``, no series labelled by tenant or collection."""
        return generate_latest(self.registry if private else _Public(self.registry))


class _Public:
    """A view of a registry without the series that carry a :data:`PRIVATE_LABELS` label.

    Families left without a series are left out whole (even their ``# HELP``), so the public exposition
    does not even tell whether any collection exists.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            public = Metric(family.name, family.documentation, family.type, family.unit)
            public.samples = [s for s in family.samples if PRIVATE_LABELS.isdisjoint(s.labels)]
            if public.samples:
                yield public


class ClusterGauges:
    """The whole deployment as this gateway last read it from Redis: work queues, dead letters,
    live workers, and whether Redis answers at all. Every replica exports the same figures, so
    alerts and dashboards aggregate them with ``max``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.depth = gauge("semaflow_queue_depth", "Work waiting to start now, by queue.", ["queue"])
        self.delayed = gauge("semaflow_queue_delayed", "Work waiting out a retry delay, by queue.", ["queue"])
        self.in_flight = gauge("semaflow_queue_in_flight", "Work under way, by queue.", ["queue"])
        self.oldest_age = gauge(
            "semaflow_queue_oldest_age_seconds", "How long the oldest waiting work has waited, by queue.", ["queue"]
        )
        self.dead_letters = gauge("semaflow_dead_letters", "Dead letters kept, by queue.", ["queue"])
        self.workers = gauge("semaflow_workers", "Live worker processes (by heartbeat), by service.", ["service"])
        self.redis_up = Gauge("semaflow_redis_up", "1 when Redis answered the last check, else 0.", registry=registry)

    def record(self, queues: Mapping[str, Mapping[str, Any]], workers: Mapping[str, int]) -> None:
        """Set the gauges from ``GET /v1/queues``'s figures and the live workers by service."""
        for queue, stats in queues.items():
            self.depth.labels(queue=queue).set(sum(stats["depth"].values()))
            self.delayed.labels(queue=queue).set(stats["delayed"])
            self.in_flight.labels(queue=queue).set(stats["in_flight"])
            self.oldest_age.labels(queue=queue).set(stats["oldest_age_seconds"])
            self.dead_letters.labels(queue=queue).set(stats["dead"])
        for service, count in workers.items():
            self.workers.labels(service=service).set(count)


async def internal_metrics(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: serve the whole registry on ``SEMAFLOW_METRICS_PORT`` (unset: not served) while the app runs."""
    server = serve_metrics(app[SETTINGS], app[METRICS].registry)
    if server is None:
        yield
        return
    app[METRICS_SERVER] = server
    yield
    server.stop()
