"""Rollback against a real Redis and store: an earlier manifest's content published as the next version."""

from __future__ import annotations

import pytest
import redis

from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared import keys
from shared.config import Settings
from shared.errors import PermanentError
from shared.index.storage import LocalStore
from shared.records.catalog import Collection
from tests.integration.indexer.staging import live_ids, load_live, make_collection, stage, unit_vectors


@pytest.fixture
def collection(redis_client: redis.Redis) -> Collection:
    return make_collection(redis_client)


def _versions(publisher: Publisher, store: LocalStore, collection: Collection) -> list[str]:
    """v1 {a, b}, v2 +c, v3 -a, v4 b replaced by d's batch (b, d)."""
    vectors = unit_vectors(6, seed=2)
    out = []
    stage(store, collection, "b1", ["a", "b"], vectors[:2])
    out.append(publisher.add_batch(collection, "b1", write_seq=1).version)
    stage(store, collection, "b2", ["c"], vectors[2:3])
    out.append(publisher.add_batch(collection, "b2", write_seq=2).version)
    out.append(publisher.delete(collection, ("a",), write_seq=3).version)
    stage(store, collection, "b4", ["b", "d"], vectors[3:5])
    out.append(publisher.add_batch(collection, "b4", write_seq=4).version)
    return [str(v) for v in out]


def test_rollback_publishes_the_earlier_content_as_a_new_version(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _v1, v2, _v3, v4 = _versions(publisher, store, collection)

    out = publisher.rollback(collection, v2, write_seq=5)

    assert out.published and out.manifest is not None
    assert (out.manifest.sequence, out.manifest.parent) == (5, v4)  # history stays append-only
    assert out.version == keys.text(redis_client.get(keys.latest("acme", "docs")) or b"")
    assert live_ids(load_live(publisher, store, collection)) == {"a", "b", "c"}
    docmap = {keys.text(k): keys.text(v) for k, v in redis_client.hgetall(keys.docmap("acme", "docs")).items()}
    assert docmap == {"a": "b1:5", "b": "b1:5", "c": "b2:5", "d": "-:5"}
    # A write accepted before the rollback but applied after it changes nothing; a new one works.
    stage(store, collection, "late", ["e"], unit_vectors(1, seed=8))
    assert not publisher.add_batch(collection, "late", write_seq=4).published
    stage(store, collection, "resend", ["d"], unit_vectors(1, seed=9))
    assert publisher.add_batch(collection, "resend", write_seq=6).published
    assert live_ids(load_live(publisher, store, collection)) == {"a", "b", "c", "d"}


def test_a_write_accepted_after_the_rollback_but_applied_first_keeps_its_effect(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    v1, _v2, _v3, _v4 = _versions(publisher, store, collection)
    # The rollback is accepted as write 5; write 6 (a new version of c, and e) overtakes it.
    stage(store, collection, "b6", ["c", "e"], unit_vectors(2, seed=10))
    publisher.add_batch(collection, "b6", write_seq=6)

    publisher.rollback(collection, v1, write_seq=5)

    snapshot = load_live(publisher, store, collection)
    assert live_ids(snapshot) == {"a", "b", "c", "e"}
    holders = {
        doc: live.segment.id for live in snapshot.segments for row, doc in enumerate(live.segment.ids) if live.live[row]
    }
    assert holders == {"a": "b1", "b": "b1", "c": "b6", "e": "b6"}
    assert redis_client.hget(keys.docmap("acme", "docs"), "c") == b"b6:6"


def test_rollback_to_an_unknown_version_or_another_collections_fails_permanently(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _versions(publisher, store, collection)
    other = make_collection(redis_client, "other")
    stage(store, other, "o1", ["x"], unit_vectors(1, seed=3))
    foreign = publisher.add_batch(other, "o1", write_seq=1).version
    with pytest.raises(PermanentError, match="does not exist"):
        publisher.rollback(collection, "0000000001-0000000000000000", write_seq=9)
    with pytest.raises(PermanentError):
        publisher.rollback(collection, str(foreign), write_seq=9)


def test_rollback_across_a_merge_resolves_every_document_to_the_segment_holding_it(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    # Given v4 {b, c, d} merged into one segment (the document map still names b1, b2 and b4),
    publisher = Publisher(redis_client, store)
    _v1, v2, _v3, _v4 = _versions(publisher, store, collection)
    merged = Compactor(store, publisher, Policy.from_settings(Settings(compaction_merge_factor=2))).compact(
        collection, full=True
    )
    assert merged is not None
    assert publisher.entries(collection.ref, ["c"]) == {"c": (merged.segment, 2)}

    # When a newer write replaces c and the collection is rolled back to v2 {a, b, c},
    stage(store, collection, "b6", ["c"], unit_vectors(1, seed=11))
    publisher.add_batch(collection, "b6", write_seq=6)
    out = publisher.rollback(collection, v2, write_seq=5)

    # Then c keeps its newer version, the others come back from the segments of v2, the moves are gone,
    assert out.published and live_ids(load_live(publisher, store, collection)) == {"a", "b", "c"}
    assert not redis_client.exists(keys.segment_moves("acme", "docs"))
    assert publisher.entries(collection.ref, ["a", "b", "c", "d"]) == {
        "a": ("b1", 5),
        "b": ("b1", 5),
        "c": ("b6", 6),
        "d": ("-", 5),
    }
    # and a delete after it tombstones the right segment.
    after = publisher.delete(collection, ("b",), write_seq=7).manifest
    assert after is not None and "b" in next(s.deleted for s in after.segments if s.id == "b1")
    assert live_ids(load_live(publisher, store, collection)) == {"a", "c"}
