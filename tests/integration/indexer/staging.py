"""Helpers shared by the indexer's integration tests: collections and batches staged as the pipeline leaves them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from services.gateway.search.engine import search_snapshot
from services.gateway.search.snapshots import Snapshot
from services.indexer.publishing import Publisher
from shared import keys
from shared.index import segments
from shared.index.documents import Document, encode_batch, encode_vectors, normalize, put_batch
from shared.index.storage import ObjectStore
from shared.records.catalog import Collection


def make_collection(client: redis.Redis, name: str = "docs", tenant: str = "acme") -> Collection:
    """A catalogued collection (and its tenant)."""
    record = Collection(tenant=tenant, name=name, id=f"id-{name}", created_at=datetime.now(UTC))
    client.hset(keys.collections(tenant), name, record.model_dump_json())
    client.sadd(keys.tenants(), tenant)
    return record


def unit_vectors(n: int, seed: int = 0, clusters: int = 0) -> np.ndarray[Any, Any]:
    """``n`` unit vectors in 384 dimensions: uniform, or around ``clusters`` centres (like topics of text)."""
    rng = np.random.default_rng(seed)
    if not clusters:
        return normalize(rng.normal(size=(n, 384)))
    centres = rng.normal(size=(clusters, 384))
    return normalize(centres[rng.integers(0, clusters, size=n)] + rng.normal(scale=0.9, size=(n, 384)))


def stage(
    store: ObjectStore, collection: Collection, batch_id: str, ids: list[str], vectors: np.ndarray[Any, Any]
) -> None:
    """Store a batch and its vectors as the gateway and embedder would."""
    docs = [Document(id=i, text=f"text {i}", metadata={"n": n, "batch": batch_id}) for n, i in enumerate(ids)]
    put_batch(store, collection.ref, batch_id, encode_batch(docs))
    store.put(collection.ref.vectors_key(batch_id), encode_vectors(vectors))


def load_live(publisher: Publisher, store: ObjectStore, collection: Collection) -> Snapshot:
    """The collection's live version, loaded the way a gateway loads it."""
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    parts = [(segments.load(store, collection.ref, seg), seg.deleted) for seg in manifest.segments]
    return Snapshot.build(collection.ref, manifest.version, parts)


def live_ids(snapshot: Snapshot) -> set[str]:
    """Every live document of a snapshot."""
    return {doc for live in snapshot.segments for row, doc in enumerate(live.segment.ids) if live.live[row]}


def top_ids(snapshot: Snapshot, query: np.ndarray[Any, Any], k: int) -> list[str]:
    """Ids of the ``k`` best hits."""
    return [h.id for h in search_snapshot(snapshot, query, k)]
