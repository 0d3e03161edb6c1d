"""Reading documents back through the gateway (in-process embedder and indexer, real Redis, local store):
one by id with its text and vector, all of them page by page, and search results that include text."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
import redis

from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared.config import Settings
from shared.index import segments
from shared.index.storage import LocalStore
from shared.records import catalog
from tests.integration.gateway.conftest import Api

pytestmark = pytest.mark.usefixtures("workers")


async def _wait_job(api: Api, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        resp = await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth)
        job: dict[str, Any] = await resp.json()
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", job
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def _ingest(api: Api, docs: list[dict[str, Any]], collection: str = "docs") -> dict[str, Any]:
    resp = await api.client.post(f"/v1/collections/{collection}/documents", json={"documents": docs}, headers=api.auth)
    assert resp.status == 202, await resp.text()
    return await _wait_job(api, (await resp.json())["job_id"])


async def _get(api: Api, path: str, status: int = 200) -> Any:
    resp = await api.client.get(path, headers=api.auth)
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


def _cached(folder: Path) -> list[str]:
    """Ids of the segments whose texts file is in a collection's segment-cache folder."""
    return sorted(p.parent.name for p in folder.glob(f"*/{segments.TEXTS_FILE}"))


async def _search(api: Api, body: dict[str, Any], status: int = 200) -> Any:
    resp = await api.client.post("/v1/collections/docs/search", json=body, headers=api.auth)
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


async def test_a_document_is_read_back_by_id_with_its_text_metadata_and_vector(api: Api) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    job = await _ingest(
        api,
        [
            {"id": "cat", "text": "The cat sits on the mat.", "metadata": {"kind": "pet", "n": 1}},
            {"id": "vec", "vector": [3.0, 4.0] + [0.0] * 382, "metadata": {"kind": "raw"}},
        ],
    )

    cat = await _get(api, "/v1/collections/docs/documents/cat")
    assert cat == {
        "id": "cat",
        "text": "The cat sits on the mat.",
        "metadata": {"kind": "pet", "n": 1},
        "index_version": job["index_version"],
    }
    with_vector = await _get(api, "/v1/collections/docs/documents/cat?include=vector")
    assert len(with_vector["vector"]) == 384
    assert math.isclose(math.fsum(x * x for x in with_vector["vector"]), 1.0, abs_tol=1e-5)
    # The stored vector is the one searches score against: searching with it finds the document itself.
    best = (await _search(api, {"vector": with_vector["vector"], "k": 1}))["results"][0]
    assert best["id"] == "cat" and best["score"] == pytest.approx(1.0, abs=1e-5)

    raw = await _get(api, "/v1/collections/docs/documents/vec?include=vector")
    assert raw["text"] is None and raw["metadata"] == {"kind": "raw"}
    assert raw["vector"][:3] == pytest.approx([0.6, 0.8, 0.0], abs=1e-6)

    missing = await _get(api, "/v1/collections/docs/documents/dog", 404)
    assert "not in the published index" in missing["detail"] and "'dog'" in missing["detail"]
    assert job["index_version"] in missing["detail"]
    await _get(api, "/v1/collections/nope/documents/cat", 404)
    bad = await _get(api, "/v1/collections/docs/documents/cat?include=text", 422)
    assert bad["errors"][0]["pointer"] == "/include"

    # A replaced document reads as its new version; a deleted one is not found.
    await _ingest(api, [{"id": "cat", "text": "A cat, replaced.", "metadata": {"kind": "pet", "n": 2}}])
    again = await _get(api, "/v1/collections/docs/documents/cat")
    assert again["text"] == "A cat, replaced." and again["metadata"]["n"] == 2
    resp = await api.client.delete("/v1/collections/docs/documents/cat", headers=api.auth)
    await _wait_job(api, (await resp.json())["job_id"])
    gone = await _get(api, "/v1/collections/docs/documents/cat", 404)
    assert "deleted" in gone["detail"]


async def test_listing_pages_hold_every_document_once_in_id_order(api: Api) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    assert await _get(api, "/v1/collections/docs/documents") == {
        "documents": [],
        "next_cursor": None,
        "index_version": None,
    }
    ids = [f"doc-{i:02d}" for i in range(25)]
    for chunk in (ids[10:22], ids[:10], ids[22:]):  # three segments, ids interleaved across them
        await _ingest(api, [{"id": d, "text": f"note number {d}", "metadata": {"id": d}} for d in chunk])
    resp = await api.client.delete("/v1/collections/docs/documents/doc-13", headers=api.auth)
    job = await _wait_job(api, (await resp.json())["job_id"])

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = f"?limit=7&cursor={cursor}" if cursor else "?limit=7"
        out = await _get(api, f"/v1/collections/docs/documents{query}")
        assert out["index_version"] == job["index_version"]
        assert all(d["metadata"] == {"id": d["id"]} for d in out["documents"])
        seen += [d["id"] for d in out["documents"]]
        pages += 1
        cursor = out["next_cursor"]
        if cursor is None:
            break
        assert len(out["documents"]) == 7
    assert seen == [d for d in ids if d != "doc-13"] and pages == 4
    assert len((await _get(api, "/v1/collections/docs/documents"))["documents"]) == 24  # default limit: 100

    bad = await _get(api, "/v1/collections/docs/documents?cursor=AAAA", 400)
    assert bad["status"] == 400 and "cursor" in bad["detail"]
    for query in ("limit=0", "limit=1001", "cursor=a%2Fb", "colour=blue"):
        await _get(api, f"/v1/collections/docs/documents?{query}", 422)
    await _get(api, "/v1/collections/docs/documents?limit=1000")


async def test_search_results_include_what_is_asked(api: Api) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    await _ingest(
        api,
        [
            {"id": "cat", "text": "The cat sits on the mat.", "metadata": {"kind": "pet"}},
            {"id": "money", "text": "Quarterly revenue grew by ten percent.", "metadata": {"kind": "finance"}},
        ],
    )
    query = "a kitten resting on a rug"
    plain = (await _search(api, {"query": query, "k": 1}))["results"][0]
    assert plain.keys() == {"id", "score", "metadata"} and plain["id"] == "cat"
    # Asked after the plain answer was cached: the cache tells the two apart.
    texts = (await _search(api, {"query": query, "k": 2, "include": ["text", "metadata"]}))["results"]
    assert [(r["id"], r["text"], r["metadata"]) for r in texts] == [
        ("cat", "The cat sits on the mat.", {"kind": "pet"}),
        ("money", "Quarterly revenue grew by ten percent.", {"kind": "finance"}),
    ]
    only_text = (await _search(api, {"query": query, "k": 1, "include": ["text"]}))["results"][0]
    assert only_text.keys() == {"id", "score", "text"}
    vectors = (await _search(api, {"query": query, "k": 1, "include": ["vector"]}))["results"][0]
    assert vectors.keys() == {"id", "score", "vector"} and len(vectors["vector"]) == 384
    bad = await _search(api, {"query": query, "include": ["body"]}, 422)
    assert bad["errors"][0]["pointer"].startswith("/include")


async def test_a_segment_written_without_texts_answers_text_null(
    api: Api, redis_client: redis.Redis, store: LocalStore
) -> None:
    # Given a document whose live segment has no texts file nor document table (as segments written
    # before either was kept),
    await api.client.put("/v1/collections/docs", headers=api.auth)
    await _ingest(api, [{"id": "old", "text": "written long ago", "metadata": {"era": "before"}}])
    record = catalog.get(redis_client, "acme", "docs")
    assert record is not None
    publisher = Publisher(redis_client, store)
    with publisher.locked(record.ref):
        base = publisher.current(record.ref)
        assert base is not None
        (seg,) = base.segments
        for name in (segments.INDEX_FILE, segments.DOCS_FILE):
            store.put(record.ref.segment_key("legacy", name), store.get(record.ref.segment_key(seg.id, name)))
        files = {n: h for n, h in seg.files.items() if n in (segments.INDEX_FILE, segments.DOCS_FILE)}
        legacy = seg.model_copy(update={"id": "legacy", "files": files})
        outcome = publisher.replace_segments(record.ref, base, (legacy,), "legacy", [seg.id])
    # When it is read and searched with its text asked for,
    got = await _get(api, "/v1/collections/docs/documents/old")
    hit = (await _search(api, {"query": "written long ago", "k": 1, "include": ["text", "metadata"]}))["results"][0]
    # Then its text is null, and the rest is there.
    assert got == {"id": "old", "text": None, "metadata": {"era": "before"}, "index_version": outcome.version}
    assert hit["id"] == "old" and hit["text"] is None and hit["metadata"] == {"era": "before"}


async def test_texts_follow_a_merge_and_the_merged_away_files_leave_the_cache(
    api: Api, redis_client: redis.Redis, store: LocalStore, settings: Settings
) -> None:
    # Given two segments whose texts the gateway has read (and so fetched into its cache),
    await api.client.put("/v1/collections/docs", headers=api.auth)
    await _ingest(api, [{"id": "a", "text": "apples are red"}])
    await _ingest(api, [{"id": "b", "text": "bananas are yellow"}])
    for doc in ("a", "b"):
        await _get(api, f"/v1/collections/docs/documents/{doc}")
    record = catalog.get(redis_client, "acme", "docs")
    assert record is not None
    cache: Path = settings.segment_cache_path / record.ref.prefix / "segments"
    assert len(_cached(cache)) == 2
    # When compaction merges them into one segment,
    policy = Policy.from_settings(settings.model_copy(update={"compaction_merge_factor": 2}))
    result = Compactor(store, Publisher(redis_client, store), policy).compact(record)
    assert result is not None and result.merged == 2
    # Then the texts are read from the merged segment's file,
    for doc, text in (("a", "apples are red"), ("b", "bananas are yellow")):
        got = await _get(api, f"/v1/collections/docs/documents/{doc}")
        assert got["text"] == text and got["index_version"] == result.version
    merged_away = set(_cached(cache)) - {result.segment}
    assert len(merged_away) == 2 and result.segment in _cached(cache)
    # and the merged-away segments leave the cache, files and all, once the version they served is
    # no longer the one being replaced either.
    await _ingest(api, [{"id": "c", "text": "cherries are dark"}])
    assert (await _get(api, "/v1/collections/docs/documents/c"))["text"] == "cherries are dark"
    left = {p.name for p in await asyncio.to_thread(lambda: list(cache.iterdir()))}
    assert result.segment in left and not merged_away & left
