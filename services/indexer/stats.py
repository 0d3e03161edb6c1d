"""Index statistics: per collection, its vectors, segments, memory bytes and age, stored for the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from shared import clock, keys
from shared.errors import CorruptObject, ObjectNotFound, PermanentError
from shared.index import index_stats, manifests
from shared.index.index_stats import IndexStats
from shared.index.segments import INDEX_FILE
from shared.records import catalog

if TYPE_CHECKING:
    import redis

    from shared.index.storage import ObjectStore
    from shared.records.catalog import Collection

log = structlog.get_logger(__name__)


def measure(client: redis.Redis, store: ObjectStore, collection: Collection) -> IndexStats:
    """The statistics of a collection's live version (zeros before its first publish)."""
    ref = collection.ref
    now = clock.now()
    raw = client.get(keys.latest(ref.tenant, ref.name))
    if not isinstance(raw, bytes | str):
        return IndexStats(
            version=None, vectors=0, documents=0, segments=0, approximate_segments=0, memory_bytes=0,
            index_created_at=None, computed_at=now,
        )  # fmt: skip
    manifest = manifests.read(store, ref, keys.text(raw))
    sizes = {obj.key: obj.size for obj in store.scan(ref.prefix + "segments/")}
    return IndexStats(
        version=manifest.version,
        vectors=sum(s.vectors for s in manifest.segments),
        documents=manifest.documents,
        segments=len(manifest.segments),
        approximate_segments=sum(1 for s in manifest.segments if s.kind != "flat"),
        quantized_segments=sum(1 for s in manifest.segments if s.quantization is not None),
        min_recall=min((s.recall for s in manifest.segments if s.recall is not None), default=None),
        memory_bytes=sum(sizes.get(ref.segment_key(s.id, INDEX_FILE), 0) for s in manifest.segments),
        index_created_at=manifest.created_at,
        computed_at=now,
    )


def refresh(client: redis.Redis, store: ObjectStore) -> int:
    """Measure and store every collection's statistics; returns how many collections.

    Raises:
        PermanentError: some collections could not be measured (the others were).
    """
    done = 0
    failed: list[str] = []
    for tenant in catalog.tenants(client):
        for collection in catalog.list_all(client, tenant):
            try:
                stats = measure(client, store, collection)
            except (CorruptObject, ObjectNotFound) as exc:  # one broken collection must not hide the others
                log.warning("stats.failed", tenant=tenant, collection=collection.name, error=str(exc))
                failed.append(f"{tenant}/{collection.name}: {exc}")
                continue
            index_stats.write(client, tenant, collection.name, stats)
            done += 1
    log.info("stats.refreshed", collections=done, failed=len(failed))
    if failed:
        raise PermanentError(f"statistics of {done} collections; failed: {'; '.join(failed)}"[:2000])
    return done
