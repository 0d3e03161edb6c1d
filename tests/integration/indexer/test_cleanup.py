"""Retention cleanup against a real Redis and store: what goes, what stays, and the live index untouched."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.indexer.cleanup import Cleaner
from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared import keys
from shared.config import Settings
from shared.errors import Cancelled
from shared.index import manifests
from shared.index.documents import Document, encode_batch, put_batch
from shared.index.storage import LocalStore
from shared.records import jobs
from shared.records.catalog import Collection
from tests.integration.indexer.staging import live_ids, load_live, make_collection, stage, top_ids, unit_vectors

POLICY = dataclasses.replace(Policy.from_settings(Settings()), merge_factor=6)
LATER = datetime.now(UTC) + timedelta(days=8)  # every object written by the test is then 8 days old


@pytest.fixture
def collection(redis_client: redis.Redis) -> Collection:
    return make_collection(redis_client)


def _job(client: redis.Redis, job_id: str, batch_id: str, state: jobs.JobState) -> None:
    stamp = datetime.now(UTC).isoformat()
    fields = {"id": job_id, "tenant": "acme", "collection": "docs", "kind": "ingest", "state": state.value,
              "documents": "1", "batch_id": batch_id, "created_at": stamp, "updated_at": stamp}  # fmt: skip
    client.hset(keys.job(job_id), mapping=fields)  # type: ignore[arg-type]
    client.zadd(keys.tenant_jobs("acme"), {job_id: 1})


def _objects(store: LocalStore, collection: Collection) -> dict[str, bytes]:
    return {key: store.get(key) for key in store.list(collection.ref.prefix)}


def _history(redis_client: redis.Redis, store: LocalStore, collection: Collection) -> Publisher:
    """Six versions, a compaction, a cancelled job's leftovers, and batches of queued and failed jobs."""
    publisher = Publisher(redis_client, store)
    vectors = unit_vectors(60, seed=3)
    for b in range(6):
        stage(store, collection, f"b{b}", [f"d{b * 10 + i}" for i in range(10)], vectors[b * 10 : (b + 1) * 10])
        publisher.add_batch(collection, f"b{b}", write_seq=b + 1)
    Compactor(store, publisher, POLICY).compact(collection)  # b0..b5 leave the live version
    _job(redis_client, "job_c", "cancelled", jobs.JobState.RUNNING)
    stage(store, collection, "cancelled", ["x"], unit_vectors(1, seed=4))
    assert jobs.cancel(redis_client, "job_c")
    with pytest.raises(Cancelled):
        publisher.add_batch(collection, "cancelled", write_seq=7, job_id="job_c")
    redis_client.delete(keys.job("job_c"))  # its record expired: nothing can retry it any more
    stage(store, collection, "queued", ["q"], unit_vectors(1, seed=5))
    _job(redis_client, "job_q", "queued", jobs.JobState.QUEUED)
    stage(store, collection, "failed", ["f"], unit_vectors(1, seed=6))
    _job(redis_client, "job_f", "failed", jobs.JobState.FAILED)
    stage(store, collection, "done", ["z"], unit_vectors(1, seed=7))
    _job(redis_client, "job_z", "done", jobs.JobState.SUCCEEDED)
    return publisher


def test_cleanup_removes_only_old_unneeded_objects_and_the_live_index_still_searches(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = _history(redis_client, store, collection)
    live = publisher.current(collection.ref)
    assert live is not None
    before = load_live(publisher, store, collection)
    kept_history = [live.version, live.parent]
    live_files = {collection.ref.segment_key(s.id, n) for s in live.segments for n in s.files}
    live_files.add(collection.ref.manifest_key(live.version))
    objects = _objects(store, collection)

    removed = Cleaner(
        redis_client, store, publisher, retention_s=7 * 86400, keep_manifests=2, clock=lambda: LATER
    ).run()

    left = _objects(store, collection)
    assert {k: objects[k] for k in live_files} == {k: left[k] for k in live_files}  # untouched, byte for byte
    names = {key.removeprefix(collection.ref.prefix) for key in left}
    assert {n for n in names if n.startswith("manifests/")} == {f"manifests/{v}.json" for v in kept_history}
    # The parent (kept for rollback) still has every segment it names.
    parent = manifests.read(store, collection.ref, str(live.parent))
    assert all(collection.ref.segment_key(s.id, n) in left for s in parent.segments for n in s.files)
    # Batches a queued or failed (retryable) job needs survive; the cancelled job's leftovers and done batches go.
    for batch in ("queued", "failed"):
        assert collection.ref.batch_key(batch) in left and collection.ref.vectors_key(batch) in left
    for batch in ("cancelled", "done"):
        assert collection.ref.batch_key(batch) not in left and collection.ref.vectors_key(batch) not in left
    assert collection.ref.batch_key("b0") in left  # its segment is in the kept parent
    assert not any(n.startswith("segments/cancelled/") for n in names)
    # 8 manifests (6 writes, the compaction, the cancelled one) less the 2 kept; 1 segment of 4 files
    # (its index, its sidecar of ids and metadata, its document table, its texts).
    assert (removed.counts["manifests"], removed.counts["segments"]) == (6, 4)
    assert (removed.counts["batches"], removed.counts["vectors"]) == (2, 2)
    assert removed.bytes == sum(len(v) for k, v in objects.items() if k not in left)
    remembered: list[bytes] = redis_client.zrange(keys.removed_versions("acme", "docs"), 0, -1)  # type: ignore[assignment]
    assert sorted(removed.versions) == sorted(v.decode() for v in remembered)
    # The live index loads and answers as before.
    after = load_live(publisher, store, collection)
    assert live_ids(after) == live_ids(before) == {f"d{i}" for i in range(60)}
    query = unit_vectors(1, seed=11)[0]
    assert top_ids(after, query, 5) == top_ids(before, query, 5)


def test_nothing_younger_than_the_retention_is_removed(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = _history(redis_client, store, collection)
    objects = _objects(store, collection)
    removed = Cleaner(redis_client, store, publisher, retention_s=7 * 86400, keep_manifests=1).run()
    assert not removed.counts and _objects(store, collection) == objects


def test_the_vectors_a_batch_came_with_go_with_it_and_an_orphan_of_a_dead_write_goes_too(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    # Given batches stored with the vectors their documents came with: one a queued job needs, one done,
    # and the vectors of a write that died before its batch file was stored.
    publisher = Publisher(redis_client, store)
    ref = collection.ref
    for batch_id, seed in (("queued", 1), ("done", 2)):
        docs = [Document(id=f"{batch_id}{i}", vector=v.tolist()) for i, v in enumerate(unit_vectors(3, seed=seed))]
        put_batch(store, ref, batch_id, encode_batch(docs))
        assert store.exists(ref.batch_vectors_key(batch_id))
    _job(redis_client, "job_q", "queued", jobs.JobState.QUEUED)
    _job(redis_client, "job_z", "done", jobs.JobState.SUCCEEDED)
    orphan = encode_batch([Document(id="o", vector=[1.0] * 384)]).vectors
    assert orphan is not None
    store.put(ref.batch_vectors_key("died"), orphan)

    # When cleanup runs past the retention
    removed = Cleaner(redis_client, store, publisher, retention_s=86400, keep_manifests=1, clock=lambda: LATER).run()

    # Then the queued job's batch keeps both objects; the rest are gone, counted as batch files.
    left = set(_objects(store, collection))
    assert left == {ref.batch_key("queued"), ref.batch_vectors_key("queued")}
    assert removed.counts["batches"] == 3
