"""The indexer's publish rules against a real Redis and a real (local) object store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import redis

from services.indexer.publishing import Publisher
from shared import keys
from shared.errors import Cancelled, CorruptObject
from shared.index import manifests, segments
from shared.index.documents import Document, encode_batch, encode_vectors, normalize, put_batch
from shared.index.storage import LocalStore
from shared.records import jobs
from shared.records.catalog import Collection


@pytest.fixture
def collection(redis_client: redis.Redis) -> Collection:
    record = Collection(tenant="acme", name="docs", id="abc123", created_at=datetime.now(UTC))
    redis_client.hset(keys.collections("acme"), "docs", record.model_dump_json())
    return record


def _stage(
    store: LocalStore, collection: Collection, batch_id: str, ids: list[str], seed: int = 0
) -> np.ndarray[Any, Any]:
    """Store a batch and its vectors as the gateway and embedder would."""
    vectors = normalize(np.random.default_rng(seed).normal(size=(len(ids), 384)))
    docs = [Document(id=i, text=f"text {i}", metadata={"n": n}) for n, i in enumerate(ids)]
    put_batch(store, collection.ref, batch_id, encode_batch(docs))
    store.put(collection.ref.vectors_key(batch_id), encode_vectors(vectors))
    return vectors


def _live_ids(publisher: Publisher, store: LocalStore, collection: Collection) -> set[str]:
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    out: set[str] = set()
    for seg in manifest.segments:
        loaded = segments.load(store, collection.ref, seg)
        out |= set(loaded.ids) - set(seg.deleted)
    return out


def test_batches_publish_increasing_versions(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a", "b"])
    _stage(store, collection, "b2", ["c"], seed=1)
    first = publisher.add_batch(collection, "b1", write_seq=1)
    second = publisher.add_batch(collection, "b2", write_seq=2)
    assert first.published and second.published
    assert first.version is not None and second.version is not None
    assert first.version < second.version
    assert redis_client.get(keys.latest("acme", "docs")) == second.version.encode()
    assert _live_ids(publisher, store, collection) == {"a", "b", "c"}
    assert second.manifest is not None and second.manifest.parent == first.version


def test_redelivered_batch_changes_nothing(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a", "b"])
    first = publisher.add_batch(collection, "b1", write_seq=1)
    again = publisher.add_batch(collection, "b1", write_seq=1)
    assert not again.published
    assert again.version == first.version
    manifest = publisher.current(collection.ref)
    assert manifest is not None and manifest.documents == 2 and len(manifest.segments) == 1


def test_resent_document_replaces_the_old_version(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a", "b"])
    _stage(store, collection, "b2", ["b"], seed=5)
    publisher.add_batch(collection, "b1", write_seq=1)
    out = publisher.add_batch(collection, "b2", write_seq=2)
    assert out.manifest is not None
    assert out.manifest.documents == 2
    old = next(s for s in out.manifest.segments if s.id == "b1")
    assert old.deleted == ("b",)


def test_writes_applied_out_of_order_end_in_acceptance_order(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    # Given a batch accepted first (seq 1) and a delete of one of its documents accepted later (seq 2),
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a", "b"])
    # When the delete is applied before the batch,
    publisher.delete(collection, ("a",), write_seq=2)
    publisher.add_batch(collection, "b1", write_seq=1)
    # Then the document stays deleted.
    assert _live_ids(publisher, store, collection) == {"b"}


def test_delete_tombstones_and_drops_empty_segments(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a"])
    _stage(store, collection, "b2", ["b"], seed=2)
    publisher.add_batch(collection, "b1", write_seq=1)
    publisher.add_batch(collection, "b2", write_seq=2)
    out = publisher.delete(collection, ("a", "missing"), write_seq=3)
    assert out.published and out.manifest is not None
    assert [s.id for s in out.manifest.segments] == ["b2"]
    assert publisher.delete(collection, ("a",), write_seq=4).published is False


def test_every_file_is_checked_against_its_sha256(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a"])
    out = publisher.add_batch(collection, "b1", write_seq=1)
    assert out.manifest is not None
    seg = out.manifest.segments[0]
    for name, digest in seg.files.items():
        assert manifests.sha256(store.get(collection.ref.segment_key(seg.id, name))) == digest
    for name in (segments.INDEX_FILE, segments.DOCS_TABLE_FILE):  # what a merge reads
        key = collection.ref.segment_key(seg.id, name)
        good = store.get(key)
        store.put(key, good + b"x")
        with pytest.raises(CorruptObject):
            segments.load(store, collection.ref, seg)
        store.put(key, good)


def _running_job(redis_client: redis.Redis, job_id: str) -> None:
    """A job record as the gateway and embedder leave it while its batch is being indexed."""
    stamp = datetime.now(UTC).isoformat()
    fields = {"id": job_id, "tenant": "acme", "collection": "docs", "kind": "ingest", "state": "running",
              "documents": "1", "created_at": stamp, "updated_at": stamp}  # fmt: skip
    redis_client.hset(keys.job(job_id), mapping=fields)  # type: ignore[arg-type]


def test_a_job_cancelled_while_running_publishes_nothing(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _stage(store, collection, "b1", ["a"])
    publisher.add_batch(collection, "b1", write_seq=1)
    before = redis_client.get(keys.latest("acme", "docs"))
    _running_job(redis_client, "job_1")
    _stage(store, collection, "b2", ["b"], seed=1)

    assert jobs.cancel(redis_client, "job_1")
    with pytest.raises(Cancelled):
        publisher.add_batch(collection, "b2", write_seq=2, job_id="job_1")
    with pytest.raises(Cancelled):
        publisher.delete(collection, ("a",), write_seq=3, job_id="job_1")

    assert redis_client.get(keys.latest("acme", "docs")) == before
    assert _live_ids(publisher, store, collection) == {"a"}
    assert redis_client.hget(keys.docmap("acme", "docs"), "b") is None


def test_a_published_job_can_no_longer_be_cancelled(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _running_job(redis_client, "job_2")
    _stage(store, collection, "b1", ["a"])
    outcome = publisher.add_batch(collection, "b1", write_seq=1, job_id="job_2")
    assert outcome.published
    # The version is live: a cancellation arriving now must be refused, not reported as done.
    assert not jobs.cancel(redis_client, "job_2")
    assert jobs.state(redis_client, "job_2") is jobs.JobState.RUNNING
