"""Loaded index snapshots per collection, swapped atomically when a new version is published.

A request takes the collection's current :class:`Snapshot` once and searches only that object, so
a swap never affects requests in flight: they finish on the version they started with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared import bus, catalog, keys, manifests, segments
from shared.events import CloudEvent, CollectionDeleted, IndexPublished
from shared.layout import CollectionRef

if TYPE_CHECKING:
    import faiss
    import redis.asyncio as aioredis

    from shared.manifests import Manifest
    from shared.segments import LoadedSegment
    from shared.storage import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class LiveSegment:
    """A loaded segment plus which of its rows are still live in this version."""

    segment: LoadedSegment
    live: np.ndarray[Any, np.dtype[np.bool_]]
    live_count: int
    _bitmap: np.ndarray[Any, np.dtype[np.uint8]] | None = None
    _postings: dict[tuple[str, str], np.ndarray[Any, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, segment: LoadedSegment, deleted: tuple[str, ...]) -> LiveSegment:
        """Mark the rows of ``deleted`` documents dead."""
        live = np.ones(len(segment.ids), dtype=bool)
        for doc_id in deleted:
            row = segment.rows.get(doc_id)
            if row is not None:
                live[row] = False
        out = cls(segment, live, int(live.sum()))
        if out.live_count < len(live):
            out._bitmap = np.packbits(live, bitorder="little")
        return out

    def selector(self, mask: np.ndarray[Any, np.dtype[np.bool_]] | None) -> tuple[faiss.IDSelector | None, Any]:
        """A FAISS selector admitting live rows (and ``mask``), with the buffer it points into."""
        import faiss

        if mask is None:
            if self._bitmap is None:
                return None, None
            bitmap = self._bitmap
        else:
            bitmap = np.packbits(mask & self.live, bitorder="little")
        return faiss.IDSelectorBitmap(len(self.live), faiss.swig_ptr(bitmap)), bitmap

    def matching(self, key: str, value: object) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Rows whose metadata ``key`` equals ``value`` (memoised per segment)."""
        import json

        token = (key, json.dumps(value))
        rows = self._postings.get(token)
        if rows is None:
            md = self.segment.metadata
            rows = np.fromiter((m.get(key, _MISSING) == value for m in md), dtype=bool, count=len(md))
            if len(self._postings) < 1024:  # bound memory for high-cardinality filters
                self._postings[token] = rows
        return rows


_MISSING = object()


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One immutable version of a collection's index, ready to search."""

    ref: CollectionRef
    version: str | None
    segments: tuple[LiveSegment, ...] = ()

    @property
    def documents(self) -> int:
        """Live documents."""
        return sum(s.live_count for s in self.segments)

    @property
    def memory_bytes(self) -> int:
        """Approximate bytes of vectors held."""
        return sum(s.segment.memory_bytes for s in self.segments)


class IndexRegistry:
    """Holds the current snapshot of every collection this gateway has loaded."""

    def __init__(self, client: aioredis.Redis, store: ObjectStore) -> None:
        self.client = client
        self.store = store
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._segments: dict[tuple[str, str], LoadedSegment] = {}  # (collection id, segment id)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.loaded = asyncio.Event()

    def get(self, tenant: str, name: str) -> Snapshot | None:
        """The collection's current snapshot, if loaded."""
        return self._snapshots.get((tenant, name))

    async def refresh(self, tenant: str, name: str) -> Snapshot | None:
        """Load the version LATEST points at, if newer than ours, and swap it in."""
        key = (tenant, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            record = await catalog.get(self.client, tenant, name)
            if record is None:
                self.drop(tenant, name)
                return None
            ref = record.ref
            raw = await self.client.get(keys.latest(tenant, name))
            version = keys.text(raw) if raw else None
            current = self._snapshots.get(key)
            if current is not None and current.ref == ref and (version is None or (current.version or "") >= version):
                return current
            if version is None:
                snapshot = Snapshot(ref, None)
            else:
                snapshot = await asyncio.to_thread(self._load, ref, version)
            self._snapshots[key] = snapshot
            self._forget_unused(ref)
            log.info("index.swapped", collection=name, tenant=tenant, version=version, documents=snapshot.documents)
            return snapshot

    def _load(self, ref: CollectionRef, version: str) -> Snapshot:
        manifest: Manifest = manifests.read(self.store, ref, version)
        live = []
        for seg in manifest.segments:
            cache_key = (ref.id, seg.id)
            loaded = self._segments.get(cache_key)
            if loaded is None:
                loaded = segments.load(self.store, ref, seg)
                self._segments[cache_key] = loaded
            live.append(LiveSegment.of(loaded, seg.deleted))
        return Snapshot(ref, version, tuple(live))

    def _forget_unused(self, ref: CollectionRef) -> None:
        in_use = {(s.ref.id, ls.segment.id) for s in self._snapshots.values() for ls in s.segments}
        for cache_key in [k for k in self._segments if k[0] == ref.id and k not in in_use]:
            del self._segments[cache_key]

    def drop(self, tenant: str, name: str) -> None:
        """Forget a deleted collection."""
        snapshot = self._snapshots.pop((tenant, name), None)
        if snapshot is not None:
            for cache_key in [k for k in self._segments if k[0] == snapshot.ref.id]:
                del self._segments[cache_key]
            log.info("index.dropped", collection=name, tenant=tenant)

    async def load_all(self) -> None:
        """Load every collection's latest version (startup); never builds anything."""
        tenants = await self.client.smembers(keys.tenants())
        for tenant in sorted(keys.text(t) for t in tenants):
            for record in await catalog.list_all(self.client, tenant):
                try:
                    await self.refresh(tenant, record.name)
                except Exception:
                    log.exception("index.load_failed", collection=record.name, tenant=tenant)

    async def _apply(self, event: CloudEvent) -> None:
        try:
            payload = event.payload()
            if isinstance(payload, IndexPublished):
                await self.refresh(payload.tenant, payload.collection)
            elif isinstance(payload, CollectionDeleted):
                self.drop(payload.tenant, payload.collection)
        except Exception:
            log.exception("index.event_failed", event_id=event.id, type=event.type)

    async def follow(self, stop: asyncio.Event, *, reconcile_s: float) -> None:
        """Apply ``index.published`` / ``collection.deleted`` events as they come, forever.

        Reads the stream position before the initial load so no event between them is missed, and
        reconciles every ``reconcile_s`` seconds in case an event was trimmed away while we were down.
        """
        position = await bus.last_entry_id(self.client)
        await self.load_all()
        self.loaded.set()
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + reconcile_s
        async for event in bus.tail(self.client, position, block_ms=int(min(reconcile_s, 2) * 1000)):
            if stop.is_set():
                return
            if event is not None:
                await self._apply(event)
            if loop.time() >= next_reconcile:
                await self.load_all()
                next_reconcile = loop.time() + reconcile_s
