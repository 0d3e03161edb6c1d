"""Answering a search: the collection's live snapshot, the cache, the query model and FAISS, in that order."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from services.gateway.search.cache import CacheKey, Level, SearchCache, digest
from services.gateway.search.engine import Hit, search_snapshot
from shared.api.schemas import Include, SearchHit, SearchRequest, SearchResponse
from shared.index.documents import normalize
from shared.messaging import tracing

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from services.gateway.metrics import GatewayMetrics
    from services.gateway.search.querymodel import QueryModel
    from services.gateway.search.snapshots import IndexRegistry, Snapshot
    from services.gateway.search.texts import TextCache
    from shared.records.catalog import Collection


class Searcher:
    """Searches a collection's live index version, through the cache when one is configured."""

    def __init__(
        self,
        registry: IndexRegistry,
        model: QueryModel,
        pool: ThreadPoolExecutor,
        cache: SearchCache | None,
        metrics: GatewayMetrics,
        *,
        texts: TextCache | None = None,
        freshness_wait_s: float = 0.0,
    ) -> None:
        self.registry = registry
        self.texts = texts  # None: results asked to include text answer null
        self.freshness_wait_s = freshness_wait_s
        self.model = model
        self.pool = pool
        self.cache = cache
        self.metrics = metrics

    async def search(
        self,
        record: Collection,
        request: SearchRequest,
        *,
        latest: str | None = None,
        read_cache: bool = True,
        store: bool = True,
    ) -> tuple[bytes, Level]:
        """The answer as JSON bytes, and where it came from.

        ``latest`` is the version the collection's LATEST pointer named when the request came in: a
        newer one than is loaded is waited for (briefly), so a job that reported success is searchable;
        a version published after the request came in is not.
        ``read_cache`` False (the client sent ``Cache-Control: no-cache``) computes a fresh answer,
        which is then stored as usual; ``store`` False (``no-store``) keeps it out of the cache.
        """
        snapshot = await self.registry.serving(record, latest, self.freshness_wait_s)
        vector: np.ndarray[Any, Any] | None = None
        if request.vector is not None:
            vector = normalize(np.asarray([request.vector], dtype=np.float32))[0]
        if snapshot is None or not snapshot.segments or snapshot.version is None:
            empty = SearchResponse(results=[], index_version=snapshot.version if snapshot else None)
            return empty.model_dump_json().encode(), Level.MISS
        key = None
        if self.cache is not None:
            key = CacheKey(
                record.tenant,
                record.name,
                record.id,
                snapshot.version,
                digest(k=request.k, filters=request.filter, text=request.query, vector=vector, include=request.include),
            )
            if read_cache:
                with tracing.span("search.cache") as span:
                    found, level = await self.cache.get(key)
                    span.set_attribute("semaflow.cache", level.value)
                if found is not None:
                    return found, level
        if vector is None:
            assert request.query is not None
            with tracing.span("search.embed"):
                started = time.perf_counter()
                vector = await self.model.encode(request.query)
                self.metrics.query_embedding_seconds.observe(time.perf_counter() - started)
        loop = asyncio.get_running_loop()
        attributes = {"semaflow.version": snapshot.version, "semaflow.segments": len(snapshot.segments), "k": request.k}
        with tracing.span("search.faiss", attributes=attributes):
            started = time.perf_counter()
            hits = await loop.run_in_executor(
                self.pool, search_snapshot, snapshot, vector, request.k, request.filter or None
            )
            self.metrics.faiss_seconds.observe(time.perf_counter() - started)
        results = await self._results(snapshot, hits, request.include)
        response = SearchResponse(results=results, index_version=snapshot.version)
        body = response.model_dump_json(exclude_unset=True).encode()
        if key is not None and self.cache is not None and store:
            await self.cache.put(key, body)
        return body, Level.MISS

    async def _results(self, snapshot: Snapshot, hits: list[Hit], include: list[Include]) -> list[SearchHit]:
        """The hits as results carrying what ``include`` asks for; texts are read from the segments' texts files
        (one read per hit, off the event loop)."""
        texts: list[str | None] = [None] * len(hits)
        if "text" in include and self.texts is not None and hits:
            located = [(h.segment, h.row) for h in hits if h.segment is not None]
            if len(located) == len(hits):
                with tracing.span("search.texts", attributes={"k": len(hits)}):
                    texts = await asyncio.to_thread(self.texts.read_many, snapshot.ref, located)
        results = []
        for hit, text in zip(hits, texts, strict=True):
            fields: dict[str, Any] = {"id": hit.id, "score": hit.score}
            if "text" in include:
                fields["text"] = text
            if "metadata" in include:
                fields["metadata"] = hit.metadata
            if "vector" in include and hit.segment is not None:
                fields["vector"] = hit.segment.vector(hit.row).tolist()
            results.append(SearchHit(**fields))
        return results
