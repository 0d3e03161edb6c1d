"""The catalogue of tenants' collections, kept in Redis."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shared import clock, keys
from shared.index.layout import CollectionRef
from shared.index.manifests import Quantization

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class Collection(BaseModel):
    """A collection's catalogue record.

    ``quantization`` is chosen at creation and kept by every segment the indexer writes for it (a record
    written before the setting existed reads as ``none``).
    """

    model_config = ConfigDict(frozen=True)

    tenant: str
    name: str
    id: str
    created_at: datetime
    quantization: Quantization = "none"

    @property
    def ref(self) -> CollectionRef:
        """Where its objects live."""
        return CollectionRef(self.tenant, self.name, self.id)


async def create(
    client: aioredis.Redis, tenant: str, name: str, quantization: Quantization = "none"
) -> tuple[Collection, bool]:
    """Create the collection unless it exists; returns the record (the existing one's) and whether it was created."""
    record = Collection(
        tenant=tenant, name=name, id=uuid.uuid4().hex[:12], created_at=clock.now(), quantization=quantization
    )
    created = await client.hsetnx(keys.collections(tenant), name, record.model_dump_json())
    if created:
        return record, True
    existing = await aget(client, tenant, name)
    assert existing is not None
    return existing, False


async def aget(client: aioredis.Redis, tenant: str, name: str) -> Collection | None:
    """The collection's record, or None."""
    raw = await client.hget(keys.collections(tenant), name)
    return Collection.model_validate_json(raw) if raw else None


async def get_with_latest(client: aioredis.Redis, tenant: str, name: str) -> tuple[Collection | None, str | None]:
    """The collection's record and the version its LATEST pointer names, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.collections(tenant), name)
        pipe.get(keys.latest(tenant, name))
        raw, latest = await pipe.execute()
    if not raw:
        return None, None
    return Collection.model_validate_json(raw), keys.text(latest) if latest else None


def get(client: redis.Redis, tenant: str, name: str) -> Collection | None:
    """The collection's record from a blocking client, or None."""
    raw = client.hget(keys.collections(tenant), name)
    return Collection.model_validate_json(raw) if raw else None


async def alist_all(client: aioredis.Redis, tenant: str) -> list[Collection]:
    """A tenant's collections, by name."""
    raw = await client.hgetall(keys.collections(tenant))
    return sorted((Collection.model_validate_json(v) for v in raw.values()), key=lambda c: c.name)


def list_all(client: redis.Redis, tenant: str) -> list[Collection]:
    """A tenant's collections from a blocking client, by name."""
    raw: dict[bytes, bytes] = client.hgetall(keys.collections(tenant))  # type: ignore[assignment]
    return sorted((Collection.model_validate_json(v) for v in raw.values()), key=lambda c: c.name)


def tenants(client: redis.Redis) -> list[str]:
    """Every known tenant, sorted."""
    raw: set[bytes] = client.smembers(keys.tenants())  # type: ignore[assignment]
    return sorted(keys.text(t) for t in raw)


async def delete(client: aioredis.Redis, collection: Collection) -> bool:
    """Remove the record and the collection's Redis state (pointer, document map, counters, statistics)."""
    t, n = collection.tenant, collection.name
    async with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.collections(t), n)
        # UNLINK: a large document map is freed in the background rather than while Redis waits.
        pipe.unlink(
            keys.latest(t, n),
            keys.docmap(t, n),
            keys.docmap_next(t, n),
            keys.segment_moves(t, n),
            keys.write_seq(t, n),
            keys.write_floor(t, n),
            keys.collection_stats(t, n),
            keys.removed_versions(t, n),
        )
        removed, _ = await pipe.execute()
    return bool(removed)
