"""Two-level search cache: L1 in this process (TTL + LRU), L2 in Redis shared by every replica.

An entry is one search answer, stored as the JSON bytes the client got. Its key names the tenant,
the collection (and its id, so a re-created collection never sees its predecessor's answers), the
index version that answered, and a digest of the normalised query text or vector, ``k``, the
filter and what the results include: a newly published version is never served a stale answer, it
simply misses. Deleting a collection drops its entries from L1 on every replica (each follows the
event stream) and from L2 by pattern.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import redis.exceptions
import structlog

from shared import keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from services.gateway.metrics import GatewayMetrics

log = structlog.get_logger(__name__)


class Level(StrEnum):
    """Where an answer came from."""

    L1 = "l1"
    L2 = "l2"
    MISS = "miss"


@dataclass(frozen=True)
class CacheKey:
    """Which answer: the collection, its index version, and the request's digest."""

    tenant: str
    collection: str
    collection_id: str
    version: str
    digest: str

    @property
    def entry(self) -> str:
        """The part of the Redis key after the collection."""
        return f"{self.collection_id}:{self.version}:{self.digest}"


def normalise_query(text: str) -> str:
    """A query text as far as the model cannot tell the difference: NFC, whitespace runs as one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


DEFAULT_INCLUDE: Final = ("metadata",)


def digest(
    *,
    k: int,
    filters: dict[str, Any],
    text: str | None = None,
    vector: np.ndarray[Any, Any] | None = None,
    include: Sequence[str] = DEFAULT_INCLUDE,
) -> str:
    """SHA-256 of a search's normalised query (text, or the unit vector's float32 bytes), k, filter and include.

    The default ``include`` adds nothing, so answers stored before results could include more keep their keys.
    """
    h = hashlib.sha256()
    fields: dict[str, Any] = {"k": k, "filter": filters}
    if (shown := sorted(set(include))) != list(DEFAULT_INCLUDE):
        fields["include"] = shown
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    if vector is not None:
        h.update(b"\0v\0" + np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    else:
        h.update(b"\0q\0" + normalise_query(text or "").encode())
    return h.hexdigest()


class TtlLru:
    """A bounded mapping whose entries expire ``ttl_s`` after they were stored (least recently used go first)."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[CacheKey, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: CacheKey) -> bytes | None:
        """The value, if present and fresh."""
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: bytes) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def drop_collection(self, tenant: str, collection: str) -> int:
        """Forget every entry of a collection; returns how many."""
        doomed = [k for k in self._items if k.tenant == tenant and k.collection == collection]
        for k in doomed:
            del self._items[k]
        return len(doomed)


class SearchCache:
    """L1 then L2 look-ups and stores, with hit/miss metrics per level.

    Redis trouble never fails a search: the L2 step is skipped and logged.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        metrics: GatewayMetrics,
        *,
        l1_ttl_s: float,
        l1_max_entries: int,
        l2_ttl_s: int,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.l1 = TtlLru(l1_max_entries, l1_ttl_s) if l1_ttl_s > 0 and l1_max_entries > 0 else None
        self.l2_ttl_s = l2_ttl_s

    async def get(self, key: CacheKey) -> tuple[bytes | None, Level]:
        """The stored answer and where it came from (``Level.MISS`` and None when neither level has it)."""
        if self.l1 is not None:
            found = self.l1.get(key)
            self.metrics.cache.labels(level="l1", result="hit" if found is not None else "miss").inc()
            if found is not None:
                return found, Level.L1
        if self.l2_ttl_s > 0:
            try:
                raw = await self.client.get(keys.search_cache(key.tenant, key.collection, key.entry))
            except redis.exceptions.RedisError as exc:
                log.warning("search_cache.read_failed", error=str(exc))
                raw = None
            self.metrics.cache.labels(level="l2", result="hit" if raw is not None else "miss").inc()
            if raw is not None:
                value = raw if isinstance(raw, bytes) else raw.encode()
                if self.l1 is not None:
                    self.l1.put(key, value)
                return value, Level.L2
        return None, Level.MISS

    async def put(self, key: CacheKey, value: bytes) -> None:
        """Store an answer in both levels."""
        if self.l1 is not None:
            self.l1.put(key, value)
        if self.l2_ttl_s > 0:
            try:
                await self.client.set(keys.search_cache(key.tenant, key.collection, key.entry), value, ex=self.l2_ttl_s)
            except redis.exceptions.RedisError as exc:
                log.warning("search_cache.write_failed", error=str(exc))

    def forget_local(self, tenant: str, collection: str) -> None:
        """Drop a collection's L1 entries (called on every replica when the collection is deleted)."""
        if self.l1 is not None:
            dropped = self.l1.drop_collection(tenant, collection)
            if dropped:
                log.info("search_cache.dropped", tenant=tenant, collection=collection, entries=dropped)

    async def forget(self, tenant: str, collection: str) -> int:
        """Drop a collection's entries from L2, by pattern; returns how many went.

        L1 entries go through :meth:`forget_local`, which the index registry calls on every replica
        whenever it drops a collection.
        """
        removed = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=keys.search_cache_pattern(tenant, collection), count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(await self.client.unlink(*batch))
                batch = []
        if batch:
            removed += int(await self.client.unlink(*batch))
        return removed
