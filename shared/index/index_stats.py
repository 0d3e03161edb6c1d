"""Index statistics per collection, computed by the indexer's statistics actor and read by the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from shared import keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class IndexStats(BaseModel):
    """A collection's index at the time of the last statistics run."""

    model_config = ConfigDict(frozen=True)

    version: str | None
    vectors: int  # rows held, tombstoned ones included (what memory and search cost follow)
    documents: int  # live documents
    segments: int
    approximate_segments: int
    quantized_segments: int = 0  # segments holding int8 codes (absent from statistics stored before them)
    min_recall: float | None = None  # lowest recall@10 measured at build among approximate or int8 segments
    memory_bytes: int  # the index files' size: what a gateway holds in memory for it
    index_created_at: datetime | None  # when the live version was published
    computed_at: datetime

    def age_seconds(self, now: datetime) -> float | None:
        """How old the live version is at ``now``."""
        return (now - self.index_created_at).total_seconds() if self.index_created_at else None


def _decode(raw: Any) -> IndexStats | None:
    return IndexStats.model_validate_json(raw) if raw else None


def write(client: redis.Redis, tenant: str, collection: str, stats: IndexStats) -> None:
    """Store a collection's statistics."""
    client.set(keys.collection_stats(tenant, collection), stats.model_dump_json())


async def read(client: aioredis.Redis, tenant: str, collection: str) -> IndexStats | None:
    """A collection's last statistics, or None before the first run."""
    return _decode(await client.get(keys.collection_stats(tenant, collection)))


async def read_many(client: aioredis.Redis, pairs: list[tuple[str, str]]) -> list[IndexStats | None]:
    """Statistics of several ``(tenant, collection)`` pairs in one round trip."""
    if not pairs:
        return []
    raws = await client.mget([keys.collection_stats(t, c) for t, c in pairs])
    return [_decode(raw) for raw in raws]
