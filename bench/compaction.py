"""Compaction benchmark: a collection of many small segments, before and after compaction.

Run by hand (not pytest)::

    .venv/bin/python bench/compaction.py                         # 50,000 vectors in 200 segments
    .venv/bin/python bench/compaction.py --vectors 20000 --segments 100
    .venv/bin/python bench/compaction.py --kinds --vectors 100000   # HNSW against IVF, same vectors
    .venv/bin/python bench/compaction.py --tiers --vectors 200000 --segments 400  # merges as batches arrive
    .venv/bin/python bench/compaction.py --merge-memory --vectors 300000 --segments 10 --reference-rev HEAD~1

In-process against a private ``redis-server`` and a temporary local store, through the same code
the services run: the indexer's publisher writes ``--segments`` batches (one segment each), the
gateway's snapshot loader and search function answer queries, and the indexer's compactor merges
them: once into one flat segment, once into one approximate segment (the threshold forced below the
collection's size). Vectors are synthetic (``--data``, see :func:`synthetic`).

``--kinds`` builds each approximate kind (HNSW, IVF-Flat) over the same vectors, each in a fresh
process (its peak memory is that process's own high-water mark during the build), checks its recall
as the indexer does (:func:`shared.index.approximate.calibrate`), and measures recall@10 and latency on
held-out queries with the parameter chosen; on ``random`` unit vectors, ``topics`` and ``noisy`` clusters.

``--merge-memory`` measures one merge's peak memory and CPU time: each merge (every segment of a
collection into one flat, then one approximate segment; ``--source-kind ivf`` makes the sources IVF
segments first, as the tiers of a large collection are) runs alone in a fresh process through the
indexer's compactor, which reports the rise of its resident set's high-water mark (``VmHWM``, file
pages it maps included) over its size before the merge, against the merged vectors' raw bytes. With
``--reference-rev`` the compactor of that git revision merges a copy of the same collection in the
same run, and the two merged segments' files are compared.

``--tiers`` publishes the batches one by one and runs the tier rule after each (as the indexer's
queued compaction does), printing the segment count as the collection grows and the merges' cost.

Measured in the same run: search latency (one thread, k=10) before and after each compaction,
compaction time, and recall@10 of the approximate segment against exact search. The reference for
each compaction time is FAISS building the same kind of index from the same vectors in memory (no
store, no checksums, no recall check, no publish).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from common import REPO, export_tree, log, percentile, table

from semaflow.redis_server import RedisServer
from services.gateway.search.engine import search_snapshot
from services.gateway.search.snapshots import Snapshot
from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared import keys
from shared.config import Settings
from shared.index import segments
from shared.index.approximate import IVF_TRAIN_PER_LIST, ivf_lists
from shared.index.documents import Document, encode_batch, encode_vectors, normalize, put_batch
from shared.index.storage import LocalStore
from shared.records.catalog import Collection

QUERIES = 300


def synthetic(n: int, seed: int, data: str) -> np.ndarray[Any, Any]:
    """``n`` unit vectors from a fixed generator (the seed picks points, not centres).

    ``topics``: 100 topics of 50 subtopics each plus noise; a query's nearest neighbours stand out
    (cosine ~0.87 for the first, ~0.75 for the tenth, ~0.6 for the hundredth), as with text
    embeddings. ``noisy``: 100 centres with as much isotropic noise as signal, so neighbours
    barely stand out (the hardest case for a graph index).
    """
    centres = np.random.default_rng(1234)
    rng = np.random.default_rng(seed)
    if data == "noisy":
        c = centres.normal(size=(100, 384))
        return normalize(c[rng.integers(0, 100, size=n)] + rng.normal(scale=0.9, size=(n, 384)))
    topics, subtopics = centres.normal(size=(100, 384)), centres.normal(size=(100, 50, 384))
    t, s = rng.integers(0, 100, size=n), rng.integers(0, 50, size=n)
    return normalize(topics[t] + 0.7 * subtopics[t, s] + 0.5 * rng.normal(size=(n, 384)))


def vectors_for(n: int, seed: int, data: str) -> np.ndarray[Any, Any]:
    """``synthetic`` data, or ``random`` unit vectors (no structure: the hardest case for any index)."""
    if data == "random":
        return normalize(np.random.default_rng(seed).normal(size=(n, 384)))
    return synthetic(n, seed, data)


def _memory_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def _one_kind(n: int, data: str, kind: str, out: Any) -> None:
    """In a fresh process: build and check one approximate kind, then query it; the figures go to ``out``."""
    import faiss

    from shared.index import approximate
    from shared.index.approximate import HnswParams, RecallTarget

    settings = Settings()
    hnsw = HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    vectors = vectors_for(n, 1, data)
    queries = vectors_for(QUERIES, 2, data)
    truth = approximate.exact_top(vectors, queries, 10)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the build's own peak
    before = _memory_mb("VmRSS")
    started = time.perf_counter()
    checked = approximate.build_checked(kind, vectors, hnsw, RecallTarget(settings.min_recall))  # type: ignore[arg-type]
    build_s = time.perf_counter() - started
    peak = _memory_mb("VmHWM") - before
    index, chosen, tries = checked.index, checked.chosen, checked.tries
    param = chosen.search_param if chosen else tries[-1].search_param
    faiss.omp_set_num_threads(1)
    params = approximate.search_params(kind, max(param, 10) if kind == "hnsw" else param)  # type: ignore[arg-type]
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, rows = index.search(q.reshape(1, -1), 10, params=params)
        times.append((time.perf_counter() - t0) * 1000)
        found.append(np.where(rows[0] >= 0, checked.order[rows[0]], -1))
    flat = faiss.IndexFlatIP(384)
    flat.add(vectors)
    flat_times = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        flat.search(q.reshape(1, -1), 10)
        flat_times.append((time.perf_counter() - t0) * 1000)
    out.put(
        (data, kind, build_s, peak, param, chosen is not None, tries[-1].recall,
         approximate.recall_at(np.array(found), truth), percentile(times, 50), percentile(flat_times, 50))
    )  # fmt: skip


def compare_kinds(n: int, datasets: list[str]) -> None:
    """HNSW against IVF on the same vectors: build time, peak memory, chosen parameter, recall, latency."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    for data in datasets:
        for kind in ("hnsw", "ivf"):
            log(f"{kind} over {n:,} {data} vectors")
            out = context.Queue()
            proc = context.Process(target=_one_kind, args=(n, data, kind, out))
            proc.start()
            row = out.get()
            proc.join()
            d, k, build_s, peak, param, ok, self_recall, recall, q_ms, flat_ms = row
            rows.append((d, k, f"{build_s:.1f}", f"{peak:,.0f}",
                         f"{param}" + ("" if ok else " (cap: built flat)"), f"{self_recall:.3f}", f"{recall:.3f}",
                         f"{q_ms:.2f}", f"{flat_ms:.2f}"))  # fmt: skip
    print(f"\n{n:,} vectors, dim 384; {QUERIES} held-out queries, k=10, one FAISS thread for queries\n")
    headers = ["data", "kind", "build + check s", "peak MB", "search param",
               "recall@10 (check)", "recall@10 (held-out)", "p50 ms", "flat p50 ms"]  # fmt: skip
    print(table(headers, rows))


# One merge in a fresh process, run in the tree under test (this one or ``--reference-rev``'s export):
# only the API every revision shares (Publisher, Compactor, Policy, Settings, LocalStore, Collection).
_MERGE_CHILD = """
import json, resource, sys, time
from pathlib import Path
import faiss, redis  # imported before the baseline: not part of the merge
from services.indexer.compaction import Compactor, Policy
from services.indexer.publishing import Publisher
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.records.catalog import Collection

args = json.loads(sys.argv[1])
client = redis.Redis.from_url(args["redis"])
store = LocalStore(Path(args["store"]))
collection = Collection.model_validate_json(args["collection"])
policy = Policy.from_settings(Settings().model_copy(update={"approximate_threshold": args["threshold"]}))
compactor = Compactor(store, Publisher(client, store), policy)

def kib(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0])

Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here: the merge's own
before = kib("VmRSS")
used = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
result = compactor.compact(collection, full=True)
wall = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
manifest = Publisher(client, store).current(collection.ref)
merged = next(s for s in manifest.segments if s.id == result.segment)
print(json.dumps({"rss_before_kib": before, "hwm_kib": kib("VmHWM"), "cpu_s": cpu, "wall_s": wall,
                  "kind": result.kind, "vectors": result.vectors,
                  "files": [merged.files, merged.search_param, merged.recall]}))
"""


def _publish_copy(
    publisher: Publisher, store: LocalStore, collection: Collection, vectors: np.ndarray[Any, Any], batches: int
) -> None:
    per = len(vectors) // batches
    for b in range(batches):
        ids = [f"d{b * per + i}" for i in range(per)]
        docs = [Document(id=i, vector=None, text=f"text {i}", metadata={"b": b}) for i in ids]
        put_batch(store, collection.ref, f"b{b:04d}", encode_batch(docs))
        store.put(collection.ref.vectors_key(f"b{b:04d}"), encode_vectors(vectors[b * per : (b + 1) * per]))
        publisher.add_batch(collection, f"b{b:04d}", write_seq=b + 1)


def _as_ivf_sources(publisher: Publisher, store: LocalStore, collection: Collection, batches: int) -> None:
    """Rewrite each (flat) segment alone as an IVF segment: one tombstone each, and a policy that rewrites it."""
    settings = Settings().model_copy(
        update={"approximate_threshold": 1, "approximate_kind": "ivf", "compaction_deleted_ratio": 1e-9,
                "compaction_tier_base_vectors": 10**9, "compaction_merge_factor": 10**6}
    )  # fmt: skip
    compactor = Compactor(store, publisher, Policy.from_settings(settings))
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    for n, seg in enumerate(manifest.segments):
        first = segments.read_ids(store, collection.ref, seg)[0]
        publisher.delete(collection, (first,), write_seq=batches + n + 1)
        assert compactor.compact(collection) is not None


def _merge_in_child(tree: Path, args: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _MERGE_CHILD, json.dumps(args)], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"merge in {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def merge_memory(n: int, batches: int, data: str, source_kind: str, reference_rev: str | None) -> None:
    """One merge per tree and kind, each in a fresh process: peak memory against the merged vectors' bytes."""
    workdir = Path(tempfile.mkdtemp(prefix="semaflow-bench-merge-"))
    server = RedisServer.start(workdir / "redis")
    client = redis.Redis.from_url(server.url)
    trees = [("this tree", REPO)]
    if reference_rev:
        trees.insert(0, (f"rev {reference_rev}", export_tree(reference_rev, workdir)))
    try:
        store = LocalStore(workdir / "objects")
        publisher = Publisher(client, store)
        vectors = vectors_for(n - n % batches, seed=1, data=data)
        raw = vectors.nbytes
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, threshold in (("flat", 10**12), ("approximate", 1)):
            for label, tree in trees:
                name = f"c-{kind}-{len(results)}"
                collection = Collection(tenant="bench", name=name, id=name, created_at=datetime.now(UTC))
                client.hset(keys.collections("bench"), name, collection.model_dump_json())
                client.sadd(keys.tenants(), "bench")
                log(f"{label}: {batches} {source_kind} segments of {len(vectors) // batches:,} vectors, merged {kind}")
                _publish_copy(publisher, store, collection, vectors, batches)
                if source_kind == "ivf":
                    _as_ivf_sources(publisher, store, collection, batches)
                child = {"redis": server.url, "store": str(store.root), "collection": collection.model_dump_json(),
                         "threshold": threshold}  # fmt: skip
                results[(kind, label)] = _merge_in_child(tree, child)
        print(f"\n{len(vectors):,} {data} vectors (dim 384, {raw / 2**20:,.0f} MiB raw) in {batches} {source_kind}"
              " segments, merged into one; each merge alone in a fresh process\n")  # fmt: skip
        rows = []
        for (_, label), r in results.items():
            rise = (r["hwm_kib"] - r["rss_before_kib"]) * 1024
            rows.append((label, r["kind"], f"{r['vectors']:,}", f"{r['hwm_kib'] / 1024:,.0f}", f"{rise / 2**20:,.0f}",
                         f"{rise / raw:.2f}", f"{r['cpu_s']:.1f}", f"{r['wall_s']:.1f}"))  # fmt: skip
        headers = ["tree", "merged kind", "vectors", "peak RSS MiB", "rise MiB", "rise / raw", "CPU s", "wall s"]
        print(table(headers, rows))
        if reference_rev:
            print()
            for kind in ("flat", "approximate"):
                ref, new = results[(kind, trees[0][0])], results[(kind, trees[1][0])]
                same = "identical" if ref["files"] == new["files"] else "DIFFERENT"  # bytes, search parameter, recall
                rise_ref = ref["hwm_kib"] - ref["rss_before_kib"]
                rise_new = new["hwm_kib"] - new["rss_before_kib"]
                ratios = f"peak rise this/reference {rise_new / rise_ref:.2f}; CPU {new['cpu_s'] / ref['cpu_s']:.2f}"
                print(f"{kind}: merged segment (files, search parameter, recall) {same}; {ratios}")
    finally:
        client.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # gigabytes of segments at a million vectors


def tiers(n: int, batches: int, data: str) -> None:
    """Publish ``batches`` batches, running the tier rule after each; print segment counts and merge cost."""
    workdir = Path(tempfile.mkdtemp(prefix="semaflow-bench-tiers-"))
    server = RedisServer.start(workdir / "redis")
    client = redis.Redis.from_url(server.url)
    try:
        store = LocalStore(workdir / "objects")
        collection = Collection(tenant="bench", name="c", id="c1", created_at=datetime.now(UTC))
        publisher = Publisher(client, store)
        compactor = Compactor(store, publisher, Policy.from_settings(Settings()))
        per = n // batches
        vectors = vectors_for(per * batches, 1, data)
        rows: list[tuple[Any, ...]] = []
        merges, merge_s, most = 0, 0.0, 0
        for b in range(batches):
            ids = [f"d{b * per + i}" for i in range(per)]
            docs = [Document(id=i, vector=None, text="x", metadata={}) for i in ids]
            put_batch(store, collection.ref, f"b{b:05d}", encode_batch(docs))
            store.put(collection.ref.vectors_key(f"b{b:05d}"), encode_vectors(vectors[b * per : (b + 1) * per]))
            publisher.add_batch(collection, f"b{b:05d}", write_seq=b + 1)
            while (result := compactor.compact(collection)) is not None:
                merges += 1
                merge_s += result.seconds
                log(f"merged {result.merged} into {result.vectors:,} ({result.kind}) in {result.seconds:.1f}s")
            manifest = publisher.current(collection.ref)
            assert manifest is not None
            most = max(most, len(manifest.segments))
            if (b + 1) & b == 0 or b + 1 == batches:  # powers of two, and the end
                kinds = ",".join(sorted({s.kind for s in manifest.segments}))
                rows.append((f"{(b + 1) * per:,}", len(manifest.segments), kinds, merges, f"{merge_s:.1f}"))
        print(f"\n{per * batches:,} {data} vectors in {batches} batches of {per}; tier rule after each publish\n")
        print(table(["vectors", "segments", "kinds", "merges so far", "merge s so far"], rows))
        print(f"\nmost segments at any time: {most}")
    finally:
        client.close()
        server.stop()


def live(publisher: Publisher, store: LocalStore, collection: Collection) -> Snapshot:
    manifest = publisher.current(collection.ref)
    assert manifest is not None
    parts = [(segments.load(store, collection.ref, seg), seg.deleted) for seg in manifest.segments]
    return Snapshot.build(collection.ref, manifest.version, parts)


def latency_ms(snapshot: Snapshot, queries: np.ndarray[Any, Any]) -> tuple[float, float, list[list[str]]]:
    import faiss

    faiss.omp_set_num_threads(1)
    times, hits = [], []
    for q in queries:
        started = time.perf_counter()
        found = search_snapshot(snapshot, q, 10)
        times.append((time.perf_counter() - started) * 1000)
        hits.append([h.id for h in found])
    return percentile(times, 50), percentile(times, 99), hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--data", choices=["topics", "noisy", "random"], default="topics", help="see vectors_for()")
    parser.add_argument("--kinds", action="store_true", help="compare HNSW and IVF (on --kinds-data)")
    parser.add_argument("--kinds-data", nargs="+", default=["random", "topics", "noisy"], help="data sets for --kinds")
    parser.add_argument("--tiers", action="store_true", help="publish batches with the tier rule after each")
    parser.add_argument("--merge-memory", action="store_true", help="one merge's peak memory and CPU, alone")
    parser.add_argument("--source-kind", choices=["flat", "ivf"], default="flat", help="sources of --merge-memory")
    parser.add_argument("--reference-rev", default=None, help="--merge-memory: also merge with this git revision")
    args = parser.parse_args()
    if args.merge_memory:
        merge_memory(args.vectors, args.segments, args.data, args.source_kind, args.reference_rev)
        return
    if args.kinds:
        compare_kinds(args.vectors, args.kinds_data)
        return
    if args.tiers:
        tiers(args.vectors, args.segments, args.data)
        return
    n, per = args.vectors, args.vectors // args.segments
    workdir = Path(tempfile.mkdtemp(prefix="semaflow-bench-compaction-"))
    server = RedisServer.start(workdir / "redis")
    client = redis.Redis.from_url(server.url)
    try:
        store = LocalStore(workdir / "objects")
        collection = Collection(tenant="bench", name="c", id="c1", created_at=datetime.now(UTC))
        client.hset(keys.collections("bench"), "c", collection.model_dump_json())
        client.sadd(keys.tenants(), "bench")
        publisher = Publisher(client, store)
        vectors = vectors_for(per * args.segments, seed=1, data=args.data)
        log(f"writing {args.segments} segments of {per} vectors")
        for b in range(args.segments):
            ids = [f"d{b * per + i}" for i in range(per)]
            docs = [Document(id=i, vector=None, text="x", metadata={"b": b}) for i in ids]
            put_batch(store, collection.ref, f"b{b:04d}", encode_batch(docs))
            store.put(collection.ref.vectors_key(f"b{b:04d}"), encode_vectors(vectors[b * per : (b + 1) * per]))
            publisher.add_batch(collection, f"b{b:04d}", write_seq=b + 1)
        queries = vectors_for(QUERIES, seed=2, data=args.data)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

        import faiss

        xb = np.ascontiguousarray(vectors, dtype=np.float32)
        started = time.perf_counter()
        faiss.IndexFlatIP(384).add(xb)
        bare_flat_s = time.perf_counter() - started
        settings = Settings()
        started = time.perf_counter()
        if settings.approximate_kind == "hnsw":  # the same index, built in one call, unchecked
            graph = faiss.IndexHNSWFlat(384, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = settings.hnsw_ef_construction
            graph.add(xb)
        else:
            lists = ivf_lists(len(xb))
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(384), 384, lists, faiss.METRIC_INNER_PRODUCT)
            ivf.train(xb[: lists * IVF_TRAIN_PER_LIST])
            ivf.add(xb)
        bare_hnsw_s = time.perf_counter() - started

        before = latency_ms(live(publisher, store, collection), queries)
        flat_policy = Policy.from_settings(settings.model_copy(update={"approximate_threshold": 10 * n}))
        started = time.perf_counter()
        flat = Compactor(store, publisher, flat_policy).compact(collection, full=True)
        flat_s = time.perf_counter() - started
        after_flat = latency_ms(live(publisher, store, collection), queries)

        hnsw_policy = Policy.from_settings(settings.model_copy(update={"approximate_threshold": 1}))
        started = time.perf_counter()
        hnsw = Compactor(store, publisher, hnsw_policy).compact(collection, full=True)
        hnsw_s = time.perf_counter() - started
        after_hnsw = latency_ms(live(publisher, store, collection), queries)
        assert flat is not None and hnsw is not None
        truth = [{f"d{i}" for i in row} for row in exact]
        recall = sum(len(set(h) & t) for h, t in zip(after_hnsw[2], truth, strict=True)) / (10 * QUERIES)
        recall_flat = sum(len(set(h) & t) for h, t in zip(after_flat[2], truth, strict=True)) / (10 * QUERIES)

        print(f"\n{n:,} {args.data} vectors in {args.segments} segments; {QUERIES} queries, k=10, one FAISS thread\n")
        rows = [
            ("before", args.segments, before[0], before[1], "", "", "", 1.0),
            ("after flat compaction", 1, after_flat[0], after_flat[1], flat_s, bare_flat_s, flat_s / bare_flat_s,
             recall_flat),
            (f"after {hnsw.kind} compaction (check {hnsw.recall})", 1, after_hnsw[0], after_hnsw[1], hnsw_s,
             bare_hnsw_s, hnsw_s / bare_hnsw_s, recall),
        ]  # fmt: skip
        headers = ["index", "segments", "p50 ms", "p99 ms", "compaction s", "bare FAISS build s", "ratio", "recall@10"]
        print(table(headers, rows))
        ratios = f"flat {after_flat[0] / before[0]:.2f}, {hnsw.kind} {after_hnsw[0] / before[0]:.2f}"
        print(f"\nsearch p50 after/before: {ratios}")
    finally:
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
