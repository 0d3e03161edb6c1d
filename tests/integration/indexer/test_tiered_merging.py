"""Segments merge by size tiers by themselves as batches arrive through a real indexer worker."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from services.indexer.compaction import Policy, choose
from services.indexer.main import build as build_indexer
from services.indexer.publishing import Publisher
from services.indexer.stats import measure
from shared import clock, keys
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.messaging import dispatch, tasks
from shared.messaging.workqueue import Entry, Priority
from shared.records import jobs
from shared.records.catalog import Collection
from shared.records.jobs import Job, JobKind, JobState
from shared.runtime.broker import build_broker
from tests.integration.indexer.staging import live_ids, load_live, make_collection, stage, top_ids, unit_vectors

T = TypeVar("T")
BATCHES, SIZE = 27, 10


def _wait(check: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    pytest.fail("timed out")


def _create_job(redis_url: str, job: Job) -> None:
    async def create() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await jobs.create(client, job)
        finally:
            await client.aclose()

    asyncio.run(create())


def _succeeded(client: redis.Redis, job_id: str) -> bool:
    found = jobs.get(client, job_id)
    return found is not None and found.state is JobState.SUCCEEDED


def _index_batch(
    settings: Settings,
    client: redis.Redis,
    broker: Any,
    collection: Collection,
    b: int,
    vectors: Any,
    store: LocalStore,
) -> None:
    """Send batch ``b`` through the index queue as the embedder does, and wait for its job to succeed."""
    ids = [f"d{b * SIZE + i}" for i in range(SIZE)]
    stage(store, collection, f"b{b:02d}", ids, vectors)
    stamp = clock.now()
    job = Job(id=f"job{b:02d}", tenant="acme", collection="docs", kind=JobKind.INGEST, state=JobState.QUEUED,
              documents=SIZE, created_at=stamp, updated_at=stamp)  # fmt: skip
    _create_job(settings.require_redis_url(), job)
    payload = tasks.IndexBatch(tenant="acme", collection="docs", collection_id=collection.id,
                               batch_id=f"b{b:02d}", job_id=job.id, write_seq=b + 1)  # fmt: skip
    entry = Entry(job.id, "acme", Priority.NORMAL, tasks.INDEX_BATCH.kwargs(payload), clock.now_ms())
    dispatch.submit(client, broker, tasks.INDEX_QUEUE, entry)
    _wait(functools.partial(_succeeded, client, job.id))


def test_segments_merge_by_tiers_as_batches_arrive(
    settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    # Given an indexer whose tiers are 10 x 3^t vectors, merging 3 segments of a tier, and whose merges of 90
    # vectors or more are HNSW segments that must show recall@10 >= 0.95,
    tiered = settings.model_copy(
        # HNSW: an IVF index of a few hundred vectors has too few to train its lists on.
        update={
            "compaction_tier_base_vectors": 10,
            "compaction_merge_factor": 3,
            "approximate_threshold": 90,
            "approximate_kind": "hnsw",
        }
    )
    policy = Policy.from_settings(tiered)
    service = build_indexer(tiered, store=store)
    worker, heartbeat = service.start()
    broker = build_broker(tiered, tiered.require_redis_url())
    collection = make_collection(redis_client)
    publisher = Publisher(redis_client, store)
    vectors = unit_vectors(BATCHES * SIZE, seed=5, clusters=8)
    most = 0
    try:
        # When 27 batches of 10 documents are indexed one after another (nobody asks for a compaction),
        for b in range(BATCHES):
            _index_batch(tiered, redis_client, broker, collection, b, vectors[b * SIZE : (b + 1) * SIZE], store)
            manifest = publisher.current(collection.ref)
            assert manifest is not None
            most = max(most, len(manifest.segments))

        # Then the queued compactions settle with the tier rule met: no tier holds 3 segments,
        def settled() -> bool:
            manifest = publisher.current(collection.ref)
            queued = redis_client.exists(keys.compaction_queued("acme", "docs"))
            return manifest is not None and choose(manifest, policy) is None and not queued

        _wait(settled)
    finally:
        broker.close()
        service.stop(worker, heartbeat)

    manifest = publisher.current(collection.ref)
    assert manifest is not None and manifest.documents == BATCHES * SIZE
    assert len(manifest.segments) <= 2 * 4  # at most merge_factor - 1 per tier, four tiers up to 270 vectors
    assert most < BATCHES  # segments never piled up one per batch
    # the large tier is approximate, its recall measured at build and its search parameter recorded,
    approximate = [s for s in manifest.segments if s.kind == "hnsw"]
    assert approximate and all(s.recall is not None and s.recall >= 0.95 and s.search_param for s in approximate)
    stats = measure(redis_client, store, collection)
    assert stats.approximate_segments == len(approximate)
    assert stats.min_recall == min(s.recall for s in approximate if s.recall is not None)
    # and every document is still there and found.
    snapshot = load_live(publisher, store, collection)
    assert live_ids(snapshot) == {f"d{i}" for i in range(BATCHES * SIZE)}
    assert top_ids(snapshot, vectors[123], 1) == ["d123"]


def test_with_merging_on_publish_off_a_full_tier_waits_for_the_schedule(
    settings: Settings, store: LocalStore, redis_client: redis.Redis
) -> None:
    off = settings.model_copy(update={"compaction_merge_factor": 3, "compaction_on_publish": False})
    service = build_indexer(off, store=store)
    worker, heartbeat = service.start()
    broker = build_broker(off, off.require_redis_url())
    collection = make_collection(redis_client)
    vectors = unit_vectors(3 * SIZE, seed=6)
    try:
        for b in range(3):
            _index_batch(off, redis_client, broker, collection, b, vectors[b * SIZE : (b + 1) * SIZE], store)
    finally:
        broker.close()
        service.stop(worker, heartbeat)
    manifest = Publisher(redis_client, store).current(collection.ref)
    assert manifest is not None and len(manifest.segments) == 3  # a full tier, left for the schedule
    assert choose(manifest, Policy.from_settings(off)) is not None
    assert not redis_client.exists(keys.compaction_queued("acme", "docs"))
