"""Index statistics in the gateway: the per-collection record in the API, and Prometheus gauges.

The indexer's statistics actor measures every collection and stores the result in Redis; the
gateway reads all of them every ``stats_refresh_s`` into one collector, registered in the app's own
registry while the app runs (made at app start, never at import), which ``/metrics`` renders.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from shared import clock, keys
from shared.api.schemas import IndexStatsInfo
from shared.index import index_stats
from shared.records import catalog
from shared.runtime.service import pause

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from shared.index.index_stats import IndexStats

log = structlog.get_logger(__name__)

_GAUGES: tuple[tuple[str, str], ...] = (
    ("semaflow_index_vectors", "Vectors held by the collection's live index (tombstoned rows included)."),
    ("semaflow_index_documents", "Live documents of the collection's index."),
    ("semaflow_index_segments", "Segments of the collection's live index."),
    ("semaflow_index_quantized_segments", "Segments of the collection's live index holding int8 codes."),
    ("semaflow_index_memory_bytes", "Bytes the collection's live index occupies (its index files)."),
    ("semaflow_index_age_seconds", "Seconds since the collection's live version was published."),
    (
        "semaflow_index_min_recall",
        "Lowest recall@10 against exact float32 search measured at build among the collection's approximate or"
        " int8 segments.",
    ),
)


def stats_info(stats: IndexStats | None, now: datetime | None = None) -> IndexStatsInfo | None:
    """The API's view of stored statistics (age as of ``now``)."""
    if stats is None:
        return None
    return IndexStatsInfo(
        vectors=stats.vectors,
        segments=stats.segments,
        approximate_segments=stats.approximate_segments,
        quantized_segments=stats.quantized_segments,
        min_recall=stats.min_recall,
        memory_bytes=stats.memory_bytes,
        index_age_seconds=stats.age_seconds(now or clock.now()),
        version=stats.version,
        computed_at=stats.computed_at,
    )


class IndexStatsCollector(Collector):
    """Renders the last statistics read from Redis as gauges labelled by tenant and collection."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, IndexStats]] = []

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, labels=["tenant", "collection"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = clock.now()
        families = {name: GaugeMetricFamily(name, doc, labels=["tenant", "collection"]) for name, doc in _GAUGES}
        for tenant, collection, stats in self.rows:
            labels = [tenant, collection]
            families["semaflow_index_vectors"].add_metric(labels, stats.vectors)
            families["semaflow_index_documents"].add_metric(labels, stats.documents)
            families["semaflow_index_segments"].add_metric(labels, stats.segments)
            families["semaflow_index_quantized_segments"].add_metric(labels, stats.quantized_segments)
            families["semaflow_index_memory_bytes"].add_metric(labels, stats.memory_bytes)
            if (age := stats.age_seconds(now)) is not None:
                families["semaflow_index_age_seconds"].add_metric(labels, age)
            if stats.min_recall is not None:  # only collections with approximate or int8 segments have one
                families["semaflow_index_min_recall"].add_metric(labels, stats.min_recall)
        yield from families.values()

    async def refresh(self, client: aioredis.Redis) -> None:
        """Read every collection's statistics."""
        pairs: list[tuple[str, str]] = []
        for tenant in sorted(keys.text(t) for t in await client.smembers(keys.tenants())):
            pairs += [(tenant, record.name) for record in await catalog.alist_all(client, tenant)]
        found = await index_stats.read_many(client, pairs)
        self.rows = [(t, c, s) for (t, c), s in zip(pairs, found, strict=True) if s is not None]


async def _refresh_until(
    stop: asyncio.Event, collector: IndexStatsCollector, client: aioredis.Redis, every_s: float
) -> None:
    # Stopped by an event, not by cancellation: a cancel landing inside a Redis call can be swallowed.
    while not stop.is_set():
        try:
            await collector.refresh(client)
        except Exception as exc:
            log.warning("index_stats.refresh_failed", error=str(exc))
        await pause(stop, every_s)


@contextlib.asynccontextmanager
async def exported(
    client: aioredis.Redis, every_s: float, registry: CollectorRegistry
) -> AsyncIterator[IndexStatsCollector]:
    """Register the gauges in ``registry`` while the block runs, refreshing them from Redis in the background."""
    collector = IndexStatsCollector()
    registry.register(collector)
    stop = asyncio.Event()
    task = asyncio.create_task(_refresh_until(stop, collector, client, every_s), name="index-stats")
    try:
        yield collector
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        registry.unregister(collector)
