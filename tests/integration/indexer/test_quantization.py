"""int8 collections against a real Redis and the local store: the indexer writes int8 segments a quarter the size,
the gateway's search over them (memory-mapped from its segment cache) agrees with exact search and honours
tombstones and filters, merges keep int8, statistics show the recall measured, and a segment that cannot reach
the recall target is written float32."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import redis
from structlog.testing import capture_logs

from services.gateway.search.engine import search_snapshot
from services.gateway.search.snapshots import Snapshot
from services.indexer import stats
from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared import keys
from shared.config import Settings
from shared.index import segments
from shared.index.approximate import RecallTarget
from shared.index.manifests import Quantization
from shared.index.segcache import SegmentCache
from shared.index.storage import LocalStore
from shared.records import catalog
from shared.records.catalog import Collection
from tests.integration.indexer.staging import stage, unit_vectors


def _collection(client: redis.Redis, name: str, quantization: Quantization) -> Collection:
    record = Collection(
        tenant="acme", name=name, id=f"id-{name}", created_at=datetime.now(UTC), quantization=quantization
    )
    client.hset(keys.collections("acme"), name, record.model_dump_json())
    client.sadd(keys.tenants(), "acme")
    return record


def _write(
    publisher: Publisher, store: LocalStore, collection: Collection, vectors: np.ndarray[Any, Any], size: int
) -> None:
    for b, start in enumerate(range(0, len(vectors), size)):
        ids = [f"d{i}" for i in range(start, min(start + size, len(vectors)))]
        stage(store, collection, f"b{b:03d}", ids, vectors[start : start + size])
        publisher.add_batch(collection, f"b{b:03d}", write_seq=b + 1)


def _mapped(publisher: Publisher, store: LocalStore, collection: Collection, cache_dir: Path) -> Snapshot:
    """The live version opened as a gateway opens it: from its segment cache, memory-mapped."""
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    cache = SegmentCache(store, cache_dir)
    parts = [(segments.open_cached(cache, collection.ref, seg), seg.deleted) for seg in manifest.segments]
    return Snapshot.build(collection.ref, manifest.version, parts)


def _exact(
    vectors: np.ndarray[Any, Any], query: np.ndarray[Any, Any], k: int, allowed: list[int] | None = None
) -> list[str]:
    rows = np.arange(len(vectors)) if allowed is None else np.array(allowed)
    scores = vectors[rows] @ query
    return [f"d{rows[i]}" for i in np.argsort(-scores, kind="stable")[:k]]


def _index_bytes(store: LocalStore, collection: Collection, publisher: Publisher) -> int:
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    return sum(len(store.get(collection.ref.segment_key(s.id, segments.INDEX_FILE))) for s in manifest.segments)


def test_an_int8_collection_writes_segments_a_quarter_the_size_and_records_their_recall(
    redis_client: redis.Redis, store: LocalStore
) -> None:
    # Given the same 1,200 clustered vectors sent to a float32 and an int8 collection in batches of 400,
    vectors = unit_vectors(1200, seed=1, clusters=20)
    publisher = Publisher(redis_client, store)
    plain, int8 = _collection(redis_client, "plain", "none"), _collection(redis_client, "small", "int8")
    _write(publisher, store, plain, vectors, 400)
    _write(publisher, store, int8, vectors, 400)
    # Then the int8 collection's segments are int8, each with the recall measured at build,
    manifest = publisher.current(int8.ref)
    assert manifest is not None and len(manifest.segments) == 3
    for seg in manifest.segments:
        assert (seg.kind, seg.quantization, seg.search_param) == ("flat", "int8", None)
        assert seg.recall is not None and seg.recall >= RecallTarget().min_recall
    plain_manifest = publisher.current(plain.ref)
    assert plain_manifest is not None and all(s.quantization is None for s in plain_manifest.segments)
    # their index files a quarter of the float32 ones,
    ratio = _index_bytes(store, int8, publisher) / _index_bytes(store, plain, publisher)
    assert 0.24 < ratio < 0.26, ratio
    # and the statistics show how many are int8 and the lowest recall measured.
    measured = stats.measure(redis_client, store, int8)
    assert measured.quantized_segments == 3 and measured.approximate_segments == 0
    assert measured.min_recall == min(s.recall for s in manifest.segments if s.recall is not None)
    assert stats.measure(redis_client, store, plain).quantized_segments == 0


def test_searching_int8_segments_finds_the_exact_top_hits_without_tombstoned_or_filtered_rows(
    redis_client: redis.Redis, store: LocalStore, tmp_path: Path
) -> None:
    # Given 1,500 clustered vectors in an int8 collection (3 segments), some of them deleted,
    vectors = unit_vectors(1520, seed=2, clusters=20)
    stored, queries = vectors[:1500], vectors[1500:]
    publisher = Publisher(redis_client, store)
    collection = _collection(redis_client, "docs", "int8")
    _write(publisher, store, collection, stored, 500)
    doomed = [int(_exact(stored, q, 1)[0][1:]) for q in queries[:5]]  # the best hit of five queries
    publisher.delete(collection, tuple(f"d{i}" for i in doomed), write_seq=100)
    # When the live version is opened from a segment cache (memory-mapped) and searched,
    snapshot = _mapped(publisher, store, collection, tmp_path / "cache")
    assert all(live.segment.quantized and not len(live.segment.vectors) for live in snapshot.segments)
    live_rows = [i for i in range(1500) if i not in doomed]
    found = expected = 0
    for query in queries:
        hits = search_snapshot(snapshot, query, 10)
        truth = _exact(stored, query, 10, live_rows)
        # Then no deleted document comes back, k hits always do, and they are the exact ones (recall@10),
        assert len(hits) == 10 and not {h.id for h in hits} & {f"d{i}" for i in doomed}
        found += len({h.id for h in hits} & set(truth))
        expected += len(truth)
        # and a metadata filter (the row's position in its batch, staged as "n") leaves only matching rows.
        filtered = search_snapshot(snapshot, query, 10, {"n": 7})
        allowed = [i for i in live_rows if i % 500 == 7]
        assert [h.id for h in filtered] == _exact(stored, query, 10, allowed)
    assert found / expected >= 0.95, found / expected
    # A row read back is its decoded int8 code: close to the vector sent, not equal to it.
    live = snapshot.segments[0]
    row = live.segment.row_of("d3")
    assert row is not None
    decoded = live.segment.vector(row)
    assert decoded.dtype == np.float32 and not np.array_equal(decoded, stored[3])
    assert np.abs(decoded - stored[3]).max() < 0.01


def test_a_segment_short_of_the_recall_target_is_written_float32_with_a_warning(
    redis_client: redis.Redis, store: LocalStore
) -> None:
    # Given an int8 collection whose indexer asks a recall of 1.0, and uniformly random vectors,
    publisher = Publisher(redis_client, store, target=RecallTarget(min_recall=1.0))
    collection = _collection(redis_client, "docs", "int8")
    with capture_logs() as logs:
        _write(publisher, store, collection, unit_vectors(500, seed=4), 500)
    # Then the segment is float32 (no recall to show), and a warning says why.
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    (seg,) = manifest.segments
    assert (seg.kind, seg.quantization, seg.recall) == ("flat", None, None)
    assert any(e["event"] == "segment.recall_short" and e["log_level"] == "warning" for e in logs)
    assert stats.measure(redis_client, store, collection).quantized_segments == 0


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_merges_keep_the_collection_int8(
    redis_client: redis.Redis, store: LocalStore, tmp_path: Path, kind: str
) -> None:
    # Given an int8 collection of 4 segments and a policy merging 4 (into an approximate segment above 1,000),
    vectors = unit_vectors(2020, seed=5, clusters=20)
    stored, queries = vectors[:2000], vectors[2000:]
    publisher = Publisher(redis_client, store)
    collection = _collection(redis_client, "docs", "int8")
    _write(publisher, store, collection, stored, 500)
    publisher.delete(collection, ("d0", "d1999"), write_seq=100)
    settings = Settings(approximate_threshold=1_000 if kind == "ivf" else 10**6, approximate_kind="ivf")
    policy = dataclasses.replace(Policy.from_settings(settings), merge_factor=4)
    # When compaction merges them,
    result = Compactor(store, publisher, policy).compact(collection)
    # Then the merged segment is int8 too, of the kind the policy asks, checked for recall,
    assert result is not None and result.merged == 4 and result.kind == kind and result.quantization == "int8"
    assert result.recall is not None and result.recall >= 0.95
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    (merged,) = manifest.segments
    assert merged.quantization == "int8" and merged.recall == result.recall
    # and its searches still agree with exact search.
    snapshot = _mapped(publisher, store, collection, tmp_path / "cache")
    live_rows = list(range(1, 1999))
    found = sum(
        len({h.id for h in search_snapshot(snapshot, q, 10)} & set(_exact(stored, q, 10, live_rows))) for q in queries
    )
    assert found / (10 * len(queries)) >= 0.95


def test_a_row_is_quantised_once_from_the_vector_sent_however_many_merges_it_goes_through(
    redis_client: redis.Redis, store: LocalStore, tmp_path: Path
) -> None:
    # Given an int8 collection of 8 batch segments, merged 4 at a time and then all into one (two levels),
    vectors = unit_vectors(2000, seed=7, clusters=20)
    publisher = Publisher(redis_client, store)
    collection = _collection(redis_client, "docs", "int8")
    _write(publisher, store, collection, vectors, 250)
    policy = dataclasses.replace(Policy.from_settings(Settings(approximate_threshold=10**6)), merge_factor=4)
    compactor = Compactor(store, publisher, policy)
    first = [compactor.compact(collection), compactor.compact(collection)]
    assert [r.merged if r else None for r in first] == [4, 4]
    last = compactor.compact(collection, full=True)
    assert last is not None and last.merged == 2 and last.quantization == "int8"
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    (merged,) = manifest.segments
    # Then the merged segment keeps every row's vector as it was sent, in its index's order,
    cache = SegmentCache(store, tmp_path / "cache")
    originals = segments.open_originals(cache, collection.ref, merged, 384)
    assert originals is not None
    order = [int(i[1:]) for i in segments.read_ids(store, collection.ref, merged)]
    np.testing.assert_array_equal(originals[0], vectors[order])
    # and its codes are those of quantising the vectors sent on its ranges: not of re-quantising codes decoded
    # from the segments it merged (which moves a row further at each level).
    opened = segments.open_cached(cache, collection.ref, merged)
    index: Any = faiss.downcast_index(opened.owner)  # type: ignore[arg-type]
    sent = np.ascontiguousarray(vectors[order])
    np.testing.assert_array_equal(index.reconstruct_n(0, len(order)), index.sa_decode(index.sa_encode(sent)))


def test_a_collection_recorded_before_quantization_existed_reads_as_none(redis_client: redis.Redis) -> None:
    legacy = {"tenant": "acme", "name": "old", "id": "id-old", "created_at": "2026-01-01T00:00:00Z"}
    redis_client.hset(
        keys.collections("acme"), "old", Collection.model_validate(legacy).model_dump_json(exclude={"quantization"})
    )
    record = catalog.get(redis_client, "acme", "old")
    assert record is not None and record.quantization == "none"
