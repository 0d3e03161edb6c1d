"""Compaction against a real Redis and store: merged segments, dropped tombstones, the document map,
writes landing meanwhile, and the recall of an approximate (HNSW) compaction against exact search.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared import keys
from shared.config import Settings
from shared.index import segments
from shared.index.approximate import ApproximateKind
from shared.index.storage import LocalStore, ObjectStore
from shared.records.catalog import Collection
from tests.integration.indexer.staging import live_ids, load_live, make_collection, stage, top_ids, unit_vectors


def tiered(merge_factor: int = 10, **overrides: Any) -> Policy:
    """The default policy with ``merge_factor`` (and other fields) overridden."""
    return dataclasses.replace(Policy.from_settings(Settings()), merge_factor=merge_factor, **overrides)


@pytest.fixture
def collection(redis_client: redis.Redis) -> Collection:
    return make_collection(redis_client)


def _write_batches(
    publisher: Publisher, store: LocalStore, collection: Collection, batches: int, size: int, extra: int = 0
) -> Any:
    """Write ``batches`` batches; returns their vectors plus ``extra`` more of the same distribution (queries)."""
    vectors = unit_vectors(batches * size + extra, seed=1, clusters=20)
    for b in range(batches):
        ids = [f"d{b * size + i}" for i in range(size)]
        stage(store, collection, f"b{b:03d}", ids, vectors[b * size : (b + 1) * size])
        publisher.add_batch(collection, f"b{b:03d}", write_seq=b + 1)
    return vectors


def test_small_segments_merge_into_one_without_their_tombstones(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    vectors = _write_batches(publisher, store, collection, batches=12, size=50)
    publisher.delete(collection, ("d3", "d70", "d599"), write_seq=100)
    before = load_live(publisher, store, collection)
    queries = unit_vectors(5, seed=9)
    expected = [top_ids(before, q, 10) for q in queries]

    result = Compactor(store, publisher, tiered(merge_factor=12)).compact(collection)

    assert result is not None and (result.merged, result.kind, result.vectors, result.dropped) == (12, "flat", 597, 3)
    manifest = publisher.current(collection.ref)
    assert manifest is not None and manifest.version == result.version
    assert [s.id for s in manifest.segments] == [result.segment] and manifest.segments[0].deleted == ()
    assert manifest.parent == before.version and manifest.documents == 597
    after = load_live(publisher, store, collection)
    assert live_ids(after) == live_ids(before)
    assert [top_ids(after, q, 10) for q in queries] == expected
    # The document map is not rewritten by the merge (d10 was written in batch b000); its readers follow
    # the segment moves to the merged segment (keeping the write order), and deletes tombstone the right one.
    assert redis_client.hget(keys.docmap("acme", "docs"), "d10") == b"b000:1"
    assert redis_client.hget(keys.segment_moves("acme", "docs"), "b000") == result.segment.encode()
    assert publisher.entries(collection.ref, ["d10"]) == {"d10": (result.segment, 1)}
    out = publisher.delete(collection, ("d10",), write_seq=101)
    assert out.manifest is not None and out.manifest.segments[0].deleted == ("d10",)
    assert "d10" not in live_ids(load_live(publisher, store, collection))
    assert vectors.shape == (600, 384)


def test_no_redis_command_of_a_merge_or_rollback_touches_more_than_a_chunk_of_documents(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    # Given 12,000 documents in 4 segments (a document map of 12,000 entries),
    publisher = Publisher(redis_client, store)
    _write_batches(publisher, store, collection, batches=4, size=3000)
    first = publisher.current(collection.ref)
    assert first is not None
    # When they are merged and then rolled back, with every command Redis runs in its slow log,
    redis_client.config_set("slowlog-max-len", 100_000)
    redis_client.config_set("slowlog-log-slower-than", 0)
    redis_client.slowlog_reset()
    try:
        assert Compactor(store, publisher, tiered(merge_factor=4)).compact(collection) is not None
        assert publisher.rollback(collection, first.version, write_seq=10).published
        log = redis_client.slowlog_get(100_000)
    finally:
        redis_client.config_set("slowlog-log-slower-than", 10_000)

    # Then no command carried more than a chunk of documents (the slow log keeps 32 arguments and
    # counts the rest: "... (N more arguments)"), and a script never received the documents at all.
    def arguments(command: str) -> int:
        shown, _, more = command.partition(" ... (")
        return len(shown.split(" ")) + (int(more.split(" ")[0]) if more else 0)

    sizes: dict[str, int] = {}
    for entry in log:
        command = keys.text(entry["command"])
        name = command.split(" ")[0].upper()
        sizes[name] = max(sizes.get(name, 0), arguments(command))
    assert sizes.get("HMGET", 0) > 1000  # the documents were read, in chunks
    assert max(sizes.values()) <= 2 * 5000 + 2, sizes


def test_nothing_to_do_leaves_the_version_alone(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    publisher = Publisher(redis_client, store)
    _write_batches(publisher, store, collection, batches=1, size=20)
    version = redis_client.get(keys.latest("acme", "docs"))
    assert Compactor(store, publisher, tiered()).compact(collection) is None
    assert redis_client.get(keys.latest("acme", "docs")) == version


class WritesDuringCompaction(LocalStore):
    """A store that, when compaction uploads its merged segment, lets other writes land first."""

    def __init__(self, root: Any, on_merged_upload: Any) -> None:
        super().__init__(root)
        self.on_merged_upload = on_merged_upload

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        super().put(key, data, if_absent=if_absent)
        self._after(key)

    def put_file(self, key: str, path: Path) -> None:
        super().put_file(key, path)
        self._after(key)

    def _after(self, key: str) -> None:
        if "/segments/c" in key and key.endswith("index.faiss") and self.on_merged_upload:
            hook, self.on_merged_upload = self.on_merged_upload, None
            hook()


def test_writes_that_land_while_compacting_are_kept(redis_client: redis.Redis, tmp_path: Any) -> None:
    collection = make_collection(redis_client)
    store = WritesDuringCompaction(tmp_path / "objects", None)
    publisher = Publisher(redis_client, store)
    _write_batches(publisher, store, collection, batches=4, size=25)
    replacement = unit_vectors(1, seed=42)

    def concurrent_writes() -> None:
        # While the merged segment is being built (no lock held), d5 is replaced and d60 deleted.
        stage(store, collection, "late", ["d5"], replacement)
        publisher.add_batch(collection, "late", write_seq=50)
        publisher.delete(collection, ("d60",), write_seq=51)

    store.on_merged_upload = concurrent_writes
    result = Compactor(store, publisher, tiered(merge_factor=4)).compact(collection)

    assert result is not None
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    merged = next(s for s in manifest.segments if s.id == result.segment)
    assert set(merged.deleted) == {"d5", "d60"}  # their merged copies are stale
    assert {s.id for s in manifest.segments} == {result.segment, "late"}
    after = load_live(publisher, store, collection)
    assert live_ids(after) == {f"d{i}" for i in range(100)} - {"d60"}
    assert top_ids(after, replacement[0], 1) == ["d5"]  # the replacement is what answers
    docmap = keys.docmap("acme", "docs")
    assert redis_client.hget(docmap, "d5") == b"late:50"
    assert redis_client.hget(docmap, "d60") == b"-:51"
    assert publisher.entries(collection.ref, ["d5", "d60", "d7"]) == {
        "d5": ("late", 50),
        "d60": ("-", 51),
        "d7": (result.segment, 1),
    }


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_above_the_threshold_compaction_builds_an_approximate_segment_with_recall_at_10_of_at_least_095(
    redis_client: redis.Redis, store: LocalStore, collection: Collection, kind: ApproximateKind
) -> None:
    # Given 4,000 vectors in 40 batch segments, 40 of them deleted, and a threshold forced down to 2,000,
    publisher = Publisher(redis_client, store)
    vectors = _write_batches(publisher, store, collection, batches=40, size=100, extra=200)
    publisher.delete(collection, tuple(f"d{i}" for i in range(0, 4000, 100)), write_seq=1000)
    settings = Settings(approximate_threshold=2_000, approximate_kind=kind)  # default HNSW parameters
    policy = dataclasses.replace(Policy.from_settings(settings), merge_factor=40)

    # When compaction runs,
    result = Compactor(store, publisher, policy).compact(collection)

    # Then one approximate segment holds the live rows, checked at build: its recall and parameter are in the manifest,
    assert result is not None and result.kind == kind and result.vectors == 3960
    assert result.recall is not None and result.recall >= 0.95 and result.search_param is not None
    manifest = publisher.current(collection.ref)
    assert manifest is not None and manifest.segments[0].search_param == result.search_param
    # and its top 10 agree with exact search on 95 % or more for held-out queries of the same distribution.
    snapshot = load_live(publisher, store, collection)
    assert len(snapshot.approximate) == 1 and not snapshot.flat
    live = np.array([i for i in range(4000) if i % 100], dtype=np.int64)
    queries = vectors[4000:]
    exact = np.argsort(-(queries @ vectors[live].T), axis=1)[:, :10]
    found = 0
    for q, truth in zip(queries, exact, strict=True):
        hits = top_ids(snapshot, q, 10)
        assert len(hits) == 10 and not {h for h in hits if int(h[1:]) % 100 == 0}
        found += len(set(hits) & {f"d{live[i]}" for i in truth})
    recall = found / (10 * len(queries))
    assert recall >= 0.95, f"recall@10 = {recall:.3f}"


def test_texts_move_into_the_merged_segment_and_a_segment_without_texts_gives_none(
    redis_client: redis.Redis, store: LocalStore, collection: Collection
) -> None:
    # Given three segments, one of them written without a texts file (as before texts were kept),
    publisher = Publisher(redis_client, store)
    _write_batches(publisher, store, collection, batches=3, size=20)
    publisher.delete(collection, ("d5",), write_seq=50)
    base = publisher.current(collection.ref)
    assert base is not None
    old = next(s for s in base.segments if s.id == "b001")
    stripped = old.model_copy(update={"files": {n: h for n, h in old.files.items() if n != segments.TEXTS_FILE}})
    with publisher.locked(collection.ref):
        kept = tuple(stripped if s.id == "b001" else s for s in base.segments)
        publisher.replace_segments(collection.ref, base, kept, "b001", [])
    # When they are merged,
    result = Compactor(store, publisher, tiered(merge_factor=3)).compact(collection)
    # Then each live row keeps its text ("text {id}" as staged), the stripped segment's rows none.
    assert result is not None and result.merged == 3
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    (merged,) = manifest.segments
    ids = segments.read_ids(store, collection.ref, merged)
    texts = dict(zip(ids, segments.read_texts(store, collection.ref, merged), strict=True))
    assert "d5" not in texts and len(texts) == 59
    assert all(texts[d] is None for d in (f"d{i}" for i in range(20, 40)))
    assert all(texts[d] == f"text {d}" for d in texts if not 20 <= int(d[1:]) < 40)


@pytest.mark.parametrize("where", ["local_store", "s3_store"])
def test_a_merge_of_flat_and_ivf_segments_builds_the_segment_an_in_memory_build_would(
    redis_client: redis.Redis, request: pytest.FixtureRequest, where: str
) -> None:
    # Given a collection of two flat segments and one IVF segment (the rewrite of a third batch), with deletes,
    store: ObjectStore = request.getfixturevalue(where)
    collection = make_collection(redis_client)
    publisher = Publisher(redis_client, store)
    _write_batches(publisher, store, collection, batches=3, size=400)  # type: ignore[arg-type]
    rewrite = tiered(approximate_threshold=300, approximate_kind="ivf", deleted_ratio=0.001)
    publisher.delete(collection, ("d900",), write_seq=10)
    assert (ivf := Compactor(store, publisher, rewrite).compact(collection)) is not None and ivf.kind == "ivf"
    publisher.delete(collection, ("d3", "d420"), write_seq=11)
    before = publisher.current(collection.ref)
    assert before is not None and sorted(s.kind for s in before.segments) == ["flat", "flat", "ivf"]
    # ... and what the in-memory path built from the same rows: every source loaded, its live rows stacked.
    ids: list[str] = []
    rows, metadata, texts = [], [], []
    for seg in before.segments:
        loaded = segments.load(store, collection.ref, seg, ivf_vectors=True)
        own_texts = segments.read_texts(store, collection.ref, seg)
        keep = [r for r, doc in enumerate(loaded.ids) if doc not in seg.deleted]
        ids += [loaded.ids[r] for r in keep]
        rows.append(loaded.vectors[keep])
        metadata += [loaded.metadata[r] for r in keep]
        texts += [own_texts[r] for r in keep]
    queries = unit_vectors(5, seed=9)
    exact = [[ids[r] for r in np.argsort(-(np.concatenate(rows) @ q), kind="stable")[:10]] for q in queries]

    for kind, threshold in (("flat", 10**9), ("ivf", 1)):
        # When they are merged (onto the same version each time),
        publisher.rollback(collection, before.version, write_seq=20 if kind == "flat" else 30)
        policy = tiered(approximate_threshold=threshold, approximate_kind="ivf")
        result = Compactor(store, publisher, policy).compact(collection, full=True)

        # Then the merged segment's files are those segments.build makes of the stacked rows,
        assert result is not None and result.kind == kind and result.vectors == len(ids) == 1197
        current = publisher.current(collection.ref)
        assert current is not None
        merged = next(s for s in current.segments if s.id == result.segment)
        built, files = segments.build(
            "m", np.concatenate(rows), ids, metadata, texts=texts, kind=kind, hnsw=policy.hnsw, target=policy.target
        )
        assert merged.files == built.files
        assert (merged.search_param, merged.recall) == (built.search_param, built.recall)
        assert all(store.get(collection.ref.segment_key(merged.id, n)) == data for n, data in files.items())
        # and a flat merge answers what exact search over the live rows answers.
        if kind == "flat":
            after = load_live(publisher, store, collection)
            assert [top_ids(after, q, 10) for q in queries] == exact
