"""Loaded index snapshots per collection, swapped atomically when a new version is published.

A request takes the collection's current :class:`Snapshot` once and searches only that object, so
a swap never affects requests in flight: they finish on the version they started with.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from opentelemetry.trace import SpanKind

from shared import keys
from shared.errors import Misdirected, StorageUnavailable
from shared.index import manifests, segments
from shared.index.layout import CollectionRef
from shared.messaging import bus, tracing
from shared.messaging.events import CloudEvent, CollectionDeleted, IndexPublished
from shared.records import catalog

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from shared.index.manifests import Manifest
    from shared.index.segcache import SegmentCache
    from shared.index.segments import LoadedSegment
    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)
LOAD_THREADS = 4  # segment files fetched at once when a version brings several new ones
# After a search-started load failed, searches start no other for this long (the object store may be
# down: each search would try again); the event follower and the reconciler still retry.
CATCH_UP_RETRY_S = 5.0


@dataclass(eq=False)
class LiveSegment:
    """A loaded segment plus which of its rows are still live in this version.

    A version whose manifest lists a segment with the same tombstones as the version before shares
    this object with it (see :meth:`Snapshot.build`), so a swap recomputes nothing for it.
    """

    segment: LoadedSegment
    deleted: tuple[str, ...]
    live: np.ndarray[Any, np.dtype[np.bool_]]
    live_count: int
    bitmap: np.ndarray[Any, np.dtype[np.uint8]] | None  # ``live`` packed for a FAISS selector; None: all live
    _postings: dict[str, np.ndarray[Any, np.dtype[np.bool_]]] = field(default_factory=dict)
    _scan: tuple[Any, Any, Any] | None = None  # rows, their FAISS pointer, the tombstone selector (see ``scan``)

    @classmethod
    def of(cls, segment: LoadedSegment, deleted: tuple[str, ...]) -> LiveSegment:
        """Mark the rows of ``deleted`` documents dead."""
        live = np.ones(len(segment.ids), dtype=bool)
        for doc_id in deleted:
            row = segment.row_of(doc_id)
            if row is not None:
                live[row] = False
        count = int(live.sum())
        bitmap = None if count == len(live) else np.packbits(live, bitorder="little")
        return cls(segment, deleted, live, count, bitmap)

    def scan(self) -> tuple[Any, Any]:
        """What an exact scan of this segment passes to FAISS: a pointer to its rows and a selector of its live rows.

        Made once per live segment (a flat segment's rows are its mapped index's own: no copy); the
        selector is None when every row is live. Concurrent first calls may each make it: the same.
        """
        if self._scan is None:
            import faiss

            rows = np.ascontiguousarray(self.segment.vectors, dtype=np.float32)
            selector = None
            if self.bitmap is not None:
                selector = faiss.IDSelectorBitmap(len(self.live), faiss.swig_ptr(self.bitmap))
            self._scan = (rows, faiss.swig_ptr(rows), selector)
        return self._scan[1], self._scan[2]

    def matching(self, key: str, value: object) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Rows whose metadata ``key`` equals ``value`` (memoised per segment)."""
        token = json.dumps([key, value])
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
    """One immutable version of a collection's index, ready to search.

    Every segment is searched where it lies (its own FAISS call over its memory-mapped index) and
    the hits merged by score: nothing is copied into a merged index, so a version costs only the
    segments it adds. Flat segments are scanned exactly (an int8 one over its codes, through its
    index); approximate ones (IVF, HNSW: compaction's large tiers) are searched with their manifest's
    ``search_param``.
    """

    ref: CollectionRef
    version: str | None
    segments: tuple[LiveSegment, ...] = ()

    @classmethod
    def build(
        cls,
        ref: CollectionRef,
        version: str,
        parts: list[tuple[LoadedSegment, tuple[str, ...]]],
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """A snapshot of segments with their tombstones, in manifest order.

        A segment ``previous`` holds (the same loaded object) with the same tombstones is taken over
        as it is: its live rows, bitmap and memoised filters are shared by both versions.
        """
        known = {live.segment.id: live for live in previous.segments} if previous is not None else {}
        lives = []
        for segment, deleted in parts:
            same = known.get(segment.id)
            if same is None or same.segment is not segment or same.deleted != deleted:
                same = LiveSegment.of(segment, deleted)
            lives.append(same)
        return cls(ref, version, tuple(lives))

    @property
    def flat(self) -> tuple[LiveSegment, ...]:
        """The segments scanned exactly."""
        return tuple(s for s in self.segments if not s.segment.approximate)

    @property
    def approximate(self) -> tuple[LiveSegment, ...]:
        """The segments searched with their own approximate index."""
        return tuple(s for s in self.segments if s.segment.approximate)

    @property
    def documents(self) -> int:
        """Live documents."""
        return sum(s.live_count for s in self.segments)

    @property
    def memory_bytes(self) -> int:
        """Bytes of vectors (and graphs, lists) the version maps or holds."""
        return sum(s.segment.nbytes or int(s.segment.vectors.nbytes) for s in self.segments)


class IndexRegistry:
    """Holds the current snapshot of every collection this gateway has loaded."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: ObjectStore,
        cache: SegmentCache,
        *,
        stream_client: aioredis.Redis | None = None,
        serves: str = "*",
    ) -> None:
        self.client = client
        # Shell patterns over "tenant/collection": the collections this gateway (its group) loads.
        self.patterns = tuple(p.strip() for p in serves.split(",") if p.strip()) or ("*",)
        # Blocking stream reads wait longer than a request's Redis timeout: they may use a client of their own.
        self.stream_client = stream_client or client
        self.store = store
        self.cache = cache
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._records: dict[tuple[str, str], Collection] = {}
        # The object store's last failure to load a version (None once a load works again).
        self.store_error: str | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._drop_listeners: list[Callable[[str, str], None]] = []
        self._swap_listeners: list[Callable[[Snapshot], None]] = []
        self._catching_up: dict[tuple[str, str], asyncio.Future[Snapshot | None]] = {}
        self._catch_up_failed: dict[tuple[str, str], float] = {}
        self._swapped: dict[tuple[str, str], asyncio.Event] = {}  # set (and replaced) at each swap
        self.loaded = asyncio.Event()

    def on_drop(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(tenant, name)`` whenever a collection is dropped (deleted, here or on another replica)."""
        self._drop_listeners.append(listener)

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener(snapshot)`` whenever a version is swapped in."""
        self._swap_listeners.append(listener)

    def serves(self, tenant: str, name: str) -> bool:
        """Whether this gateway's group serves the collection (loads it, answers its reads)."""
        return any(fnmatch.fnmatchcase(f"{tenant}/{name}", p) for p in self.patterns)

    def get(self, tenant: str, name: str) -> Snapshot | None:
        """The collection's current snapshot, if loaded."""
        return self._snapshots.get((tenant, name))

    def last_known(self, tenant: str, name: str) -> tuple[Collection, str | None] | None:
        """The collection's record as last read from Redis and the version loaded for it (None if not loaded)."""
        snapshot = self._snapshots.get((tenant, name))
        record = self._records.get((tenant, name))
        if snapshot is None or record is None or snapshot.ref != record.ref:
            return None
        return record, snapshot.version

    async def refresh(self, tenant: str, name: str) -> Snapshot | None:
        """Load the version LATEST points at, if newer than ours, and swap it in."""
        key = (tenant, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            record = await catalog.aget(self.client, tenant, name)
            if record is None:
                self.drop(tenant, name)
                return None
            self._records[key] = record
            ref = record.ref
            raw = await self.client.get(keys.latest(tenant, name))
            version = keys.text(raw) if raw else None
            current = self._snapshots.get(key)
            if current is not None and current.ref == ref and (version is None or (current.version or "") >= version):
                return current
            if version is None:
                snapshot = Snapshot(ref, None)
            else:
                reusable = current if current is not None and current.ref == ref else None
                snapshot = await self._load_noting_store(ref, version, reusable)
            self._snapshots[key] = snapshot
            if current is not None and current.ref != ref:  # deleted and created again: the old files go
                self.cache.evict_collection(current.ref)
            self._swapped.pop(key, asyncio.Event()).set()
            log.info("index.swapped", collection=name, tenant=tenant, version=version, documents=snapshot.documents)
            for listener in self._swap_listeners:
                listener(snapshot)
            return snapshot

    async def serving(self, record: Collection, latest: str | None, wait_s: float) -> Snapshot | None:
        """The snapshot a read of ``record`` answers from (None: the collection is gone).

        ``latest`` is the version its LATEST pointer named when the request came in: a newer one than
        is loaded is waited for up to ``wait_s`` (see :meth:`catch_up`), so what a finished job wrote is
        readable.
        """
        if not self.serves(record.tenant, record.name):
            raise Misdirected(
                f"collection {record.name!r} is served by another gateway group"
                f" (this one serves {', '.join(self.patterns)}); send its searches and reads there"
            )
        snapshot = self.get(record.tenant, record.name)
        if snapshot is None or snapshot.ref != record.ref:
            return await self.refresh(record.tenant, record.name)
        if latest is not None and (snapshot.version or "") < latest:
            return await self.catch_up(snapshot, latest, wait_s)
        return snapshot

    async def catch_up(self, current: Snapshot, latest: str, wait_s: float) -> Snapshot:
        """A snapshot at version ``latest`` or newer if one swaps in within ``wait_s``; the newest loaded otherwise.

        The search waits for the version it named, not for whatever is newest: while writes keep
        publishing, it answers as soon as any swap (the event follower's or its own) reaches that
        version, even with a newer one loading. A load costs only the segments a version adds. When no
        load is under way one is started; concurrent searches share it, and it goes on after a
        time-out (the event follower would start it anyway). After a failed load, searches do not
        start another for :data:`CATCH_UP_RETRY_S` (the follower and the reconciler keep trying).
        """
        key = (current.ref.tenant, current.ref.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        best = current
        waited_on: asyncio.Future[Snapshot | None] | None = None
        while True:
            loaded = self._snapshots.get(key)
            if loaded is not None and loaded.ref == current.ref and (loaded.version or "") > (best.version or ""):
                best = loaded
            remaining = deadline - loop.time()
            if (best.version or "") >= latest or remaining <= 0:
                return best
            if waited_on is not None and waited_on.done():  # it failed, or found another incarnation
                return best
            failed_at = self._catch_up_failed.get(key)
            if failed_at is not None and time.monotonic() - failed_at < CATCH_UP_RETRY_S:
                return best
            loading = self._catching_up.get(key)
            if loading is None or loading.done():
                loading = asyncio.ensure_future(self.refresh(*key))
                self._catching_up[key] = loading
                loading.add_done_callback(lambda task: self._caught_up(key, task))
            waited_on = loading
            swapped: asyncio.Future[Any] = asyncio.ensure_future(self._swapped.setdefault(key, asyncio.Event()).wait())
            waits: set[asyncio.Future[Any]] = {swapped, loading}
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                swapped.cancel()

    def _caught_up(self, key: tuple[str, str], task: asyncio.Future[Snapshot | None]) -> None:
        if self._catching_up.get(key) is task:
            del self._catching_up[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._catch_up_failed[key] = time.monotonic()
            if isinstance(exc, StorageUnavailable):
                return  # noted once by the load
            log.warning("index.catch_up_failed", collection=key[1], tenant=key[0], error=repr(exc))
        else:
            self._catch_up_failed.pop(key, None)

    async def _load_noting_store(self, ref: CollectionRef, version: str, current: Snapshot | None) -> Snapshot:
        """Load a version; an unreachable object store is noted (logged once per outage) and raised.

        The loaded version keeps answering meanwhile; the follower's reconciliation and later
        searches try again.
        """
        try:
            snapshot = await asyncio.to_thread(self._load, ref, version, current)
        except StorageUnavailable as exc:
            if self.store_error is None:
                log.warning("index.store_unavailable", collection=ref.name, tenant=ref.tenant, error=str(exc))
            self.store_error = str(exc)
            raise
        if self.store_error is not None:
            log.info("index.store_available", collection=ref.name, tenant=ref.tenant)
            self.store_error = None
        return snapshot

    def _load(self, ref: CollectionRef, version: str, current: Snapshot | None) -> Snapshot:
        """Read the manifest, open only the segments the current snapshot lacks, and share the rest.

        Segments are opened from the local segment cache (downloaded and verified once, then
        memory-mapped). Afterwards the cache drops this collection's segments that neither this
        version nor the one it replaces uses.
        """
        manifest: Manifest = manifests.read(self.store, ref, version)
        known = {live.segment.id: live.segment for live in current.segments} if current else {}
        missing = [seg for seg in manifest.segments if seg.id not in known]
        if len(missing) > 1:  # fetching, hashing and unzipping release the GIL: overlap them
            with ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="segment-load") as pool:
                loaded = pool.map(lambda seg: segments.open_cached(self.cache, ref, seg), missing)
                fetched = {seg.id: one for seg, one in zip(missing, loaded, strict=True)}
        else:
            fetched = {seg.id: segments.open_cached(self.cache, ref, seg) for seg in missing}
        parts = [(known.get(seg.id) or fetched[seg.id], seg.deleted) for seg in manifest.segments]
        snapshot = Snapshot.build(ref, version, parts, current)
        evicted = self.cache.evict(ref, {seg.id for seg in manifest.segments} | set(known))
        if evicted:
            log.info("index.cache_evicted", collection=ref.name, tenant=ref.tenant, segments=len(evicted))
        return snapshot

    def drop(self, tenant: str, name: str) -> None:
        """Forget a deleted collection."""
        self._records.pop((tenant, name), None)
        if (dropped := self._snapshots.pop((tenant, name), None)) is not None:
            self.cache.evict_collection(dropped.ref)
            log.info("index.dropped", collection=name, tenant=tenant)
        for listener in self._drop_listeners:
            listener(tenant, name)

    async def load_all(self) -> None:
        """Load every collection's latest version (startup); never builds anything."""
        tenants = await self.client.smembers(keys.tenants())
        for tenant in sorted(keys.text(t) for t in tenants):
            for record in await catalog.alist_all(self.client, tenant):
                if not self.serves(tenant, record.name):
                    continue
                try:
                    await self.refresh(tenant, record.name)
                except StorageUnavailable:
                    pass  # noted once by the load; the loaded version keeps answering until the next round
                except Exception:
                    log.exception("index.load_failed", collection=record.name, tenant=tenant)

    async def _apply(self, event: CloudEvent) -> None:
        try:
            payload = event.payload()
            if isinstance(payload, IndexPublished):
                if not self.serves(payload.tenant, payload.collection):
                    return  # another gateway group's collection
                # The swap continues the trace of the write that published the version.
                attributes = {"semaflow.tenant": payload.tenant, "semaflow.version": payload.version}
                with tracing.span(
                    "index.swap", parent=event.traceparent, kind=SpanKind.CONSUMER, attributes=attributes
                ):
                    await self.refresh(payload.tenant, payload.collection)
            elif isinstance(payload, CollectionDeleted):
                self.drop(payload.tenant, payload.collection)
        except StorageUnavailable:
            pass  # noted once by the load; reconciliation loads the version once the store is back
        except Exception:
            log.exception("index.event_failed", event_id=event.id, type=event.type)

    async def follow(
        self, stop: asyncio.Event, *, reconcile_s: float, on_following: Callable[[], None] | None = None
    ) -> None:
        """Apply ``index.published`` / ``collection.deleted`` events as they come, forever.

        Reads the stream position before the initial load so no event between them is missed, and
        reconciles every ``reconcile_s`` seconds in case an event was trimmed away while we were down.
        ``on_following`` is called once that load is done (Redis answered), before the first event.
        """
        position = await bus.last_entry_id(self.stream_client)
        await self.load_all()
        self.loaded.set()
        if on_following is not None:
            on_following()
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + reconcile_s
        async for event in bus.tail(self.stream_client, position, block_ms=int(min(reconcile_s, 2) * 1000)):
            if stop.is_set():
                return
            if event is not None:
                await self._apply(event)
            if loop.time() >= next_reconcile:
                await self.load_all()
                next_reconcile = loop.time() + reconcile_s
