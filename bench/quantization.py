"""int8 against float32 segments: bytes per vector on disk and mapped, recall@10, search latency and CPU.

Run by hand (not pytest)::

    .venv/bin/python bench/quantization.py                          # 100,000 topic vectors, flat segments
    .venv/bin/python bench/quantization.py --kind ivf --data noisy  # approximate (IVF-Flat against IVF-SQ8)
    .venv/bin/python bench/quantization.py --json bench/results/quantization.json

In-process, through the code the services run: the indexer's segment builder writes one segment of
``--vectors`` vectors per quantisation (``none``, ``int8``; the int8 one checked for recall at build,
as the indexer checks it) into a temporary local store, and each is opened the way a gateway opens it
(downloaded into a segment cache, verified, memory-mapped) and searched with the gateway's own search
function (k=10, one FAISS thread). Vectors are synthetic (``--data``: ``topics``, ``noisy`` or
``random``; see ``bench/compaction.py``); the queries are ``--queries`` more of the same distribution.

Per quantisation, in the same run (queries alternate between the two segments, so a busy machine
slows both alike):

- **bytes/vector**: the index file on disk, and what the mapping holds in memory after the searches
  (the Rss of the index file's mapping in ``/proc/self/smaps``: every page a scan touched);
- **recall@10** of the search answers against exact float32 search (numpy over the vectors sent);
  beside it the recall the build measured on its own held-out sample (stored in the manifest entry);
- **search**: p50/p90 wall time per query and the CPU time per query (this thread's own);
- **build**: seconds and CPU seconds to build the segment (the int8 one includes its recall check).

Bytes are compared as int8 over float32; times as the slower path over the faster one (the
reference is never the slower path).

``--merges`` measures what merging does to an int8 collection instead: the vectors are published in
batches of ``--batch`` through the indexer's own publisher into an int8 collection (a real Redis the
benchmark starts, the local store), merged by the indexer's compactor ``--merge-factor`` segments at a
time, tier after tier, and finally into one flat segment; the recall@10 of that segment (against exact
float32 search over the vectors sent) is printed beside that of one int8 segment built straight from
them, and how far the merged segment's decoded rows are from the vectors sent::

    .venv/bin/python bench/quantization.py --merges --vectors 100000 --batch 1000 --merge-factor 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, log, percentile, table, write_json
from compaction import vectors_for

from services.gateway.search.engine import search_snapshot
from services.gateway.search.snapshots import Snapshot
from shared.index import segments
from shared.index.approximate import HnswParams, RecallTarget
from shared.index.layout import CollectionRef
from shared.index.manifests import Quantization, SegmentRef
from shared.index.segcache import SegmentCache
from shared.index.storage import LocalStore

K = 10
QUANTIZATIONS: tuple[Quantization, ...] = ("none", "int8")


def mapped_bytes(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (``Rss`` in ``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):  # a mapping's header line: "start-end perms ... path"
            inside = line.rstrip().endswith(str(path))
        elif inside and head == "Rss:":
            total += int(line.split()[1]) * 1024
    return total


def build(
    store: LocalStore, ref: CollectionRef, vectors: np.ndarray[Any, Any], kind: str, quantization: Quantization
) -> tuple[SegmentRef, float, float]:
    """Build and store one segment; returns its manifest entry, and the build's wall and CPU seconds."""
    ids = [f"d{i}" for i in range(len(vectors))]
    wall, cpu = time.perf_counter(), time.process_time()
    segment, files = segments.build(
        f"s-{quantization}",
        vectors,
        ids,
        [{}] * len(ids),
        kind=kind,  # type: ignore[arg-type]
        hnsw=HnswParams(32, 200, 512),
        target=RecallTarget(),
        quantization=quantization,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    segments.upload(store, ref, segment, files)
    return segment, wall, cpu


def merged(vectors: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], batch: int, factor: int) -> dict[str, Any]:
    """Publish ``vectors`` in batches into an int8 collection, merge them tier by tier into one flat segment, and
    measure it against exact search and against one int8 segment built from the vectors sent."""
    import dataclasses
    from datetime import UTC, datetime

    import redis

    from semaflow.redis_server import RedisServer
    from services.indexer.compaction import Compactor, Policy
    from services.indexer.publishing import Publisher
    from shared import keys
    from shared.config import Settings
    from shared.index.documents import Document, encode_batch, encode_vectors, put_batch
    from shared.records.catalog import Collection

    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer.start(Path(tmp) / "redis")
        client = redis.Redis.from_url(server.url)
        try:
            store = LocalStore(Path(tmp) / "objects")
            cache = SegmentCache(store, Path(tmp) / "cache")
            now = datetime.now(UTC)
            collection = Collection(tenant="bench", name="q", id="q1", created_at=now, quantization="int8")
            client.hset(keys.collections("bench"), "q", collection.model_dump_json())
            client.sadd(keys.tenants(), "bench")
            publisher = Publisher(client, store)
            log(f"publishing {len(vectors):,} vectors in int8 batches of {batch:,}")
            for b, start in enumerate(range(0, len(vectors), batch)):
                ids = [f"d{i}" for i in range(start, min(start + batch, len(vectors)))]
                docs = [Document(id=i, vector=None, text="x", metadata={}) for i in ids]
                put_batch(store, collection.ref, f"b{b:05d}", encode_batch(docs))
                store.put(collection.ref.vectors_key(f"b{b:05d}"), encode_vectors(vectors[start : start + batch]))
                publisher.add_batch(collection, f"b{b:05d}", write_seq=b + 1)
            flat = Policy.from_settings(Settings(approximate_threshold=10**12))
            policy = dataclasses.replace(flat, merge_factor=factor)
            compactor = Compactor(store, publisher, policy)
            merges = 0
            while compactor.compact(collection) is not None:
                merges += 1
            if compactor.compact(collection, full=True) is not None:
                merges += 1
            manifest = publisher.current(collection.ref)
            assert manifest is not None and len(manifest.segments) == 1
            (segment,) = manifest.segments

            def recall(ref: CollectionRef, segment: SegmentRef) -> tuple[float, Any]:
                """Recall@10 of ``segment`` opened as a gateway opens it, against exact search; and the opened one."""
                loaded = segments.open_cached(cache, ref, segment)
                snapshot = Snapshot.build(ref, segment.id, [(loaded, ())])
                hits = sum(
                    len({int(h.id[1:]) for h in search_snapshot(snapshot, q, K)} & set(truth[i].tolist()))
                    for i, q in enumerate(queries)
                )
                return hits / truth.size, loaded

            merged_recall, loaded = recall(collection.ref, segment)
            order = np.array([int(i[1:]) for i in loaded.ids])
            decoded = np.vstack([loaded.vector(r) for r in range(len(order))])
            once_ref = CollectionRef("bench", "once", "o")
            once_recall, _ = recall(once_ref, build(store, once_ref, vectors, "flat", "int8")[0])
            return {
                "merges": merges,
                "merged_kind": f"{segment.kind}/{segment.quantization or 'float32'}",
                "recall_at_10_merged": merged_recall,
                "recall_at_10_once": once_recall,
                "largest_move_merged": float(np.abs(decoded - vectors[order]).max()),
                "files": sorted(segment.files),
            }
        finally:
            client.close()
            server.stop()


def ratio(int8: float, float32: float) -> str:
    """The slower of the two as a multiple of the faster (the reference is always the faster path)."""
    if int8 >= float32:
        return f"int8 {int8 / float32:.2f}x float32's"
    return f"float32 {float32 / int8:.2f}x int8's"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--data", choices=("topics", "noisy", "random"), default="topics")
    parser.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--merges", action="store_true", help="recall of an int8 collection merged tier by tier")
    parser.add_argument("--batch", type=int, default=1_000, help="--merges: vectors per published batch")
    parser.add_argument("--merge-factor", type=int, default=10, help="--merges: segments merged at a time")
    args = parser.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(1)  # as the gateway's search threads run (one FAISS thread each)
    log(f"generating {args.vectors:,} + {args.queries} {args.data} vectors")
    data = np.ascontiguousarray(vectors_for(args.vectors + args.queries, 7, args.data), dtype=np.float32)
    vectors, queries = data[: args.vectors], data[args.vectors :]
    if args.merges:
        result = merged(vectors, queries, args.batch, args.merge_factor)
        print(
            f"semaflow int8 merges: {args.vectors:,} {args.data} vectors in batches of {args.batch:,}, merged"
            f" {args.merge_factor} at a time ({result['merges']} merges) into one {result['merged_kind']} segment"
        )
        print(f"  recall@10, merged:             {result['recall_at_10_merged']:.4f}")
        print(f"  recall@10, quantised once:     {result['recall_at_10_once']:.4f}")
        print(f"  largest move of a merged row:  {result['largest_move_merged']:.5f}")
        print(f"  merged segment's files:        {', '.join(result['files'])}")
        write_json(args.json, {"environment": environment(), "merges": result})
        return 0
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    out: dict[str, Any] = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "objects")
        cache = SegmentCache(store, Path(tmp) / "cache")
        ref = CollectionRef("bench", "quantization", "q")
        snapshots: dict[Quantization, Snapshot] = {}
        built: dict[Quantization, tuple[SegmentRef, float, float]] = {}
        for q in QUANTIZATIONS:
            log(f"building the {q} {args.kind} segment")
            built[q] = build(store, ref, vectors, args.kind, q)
            loaded = segments.open_cached(cache, ref, built[q][0])
            snapshots[q] = Snapshot.build(ref, q, [(loaded, ())])
        log(f"searching {args.queries} queries, alternating")
        walls: dict[Quantization, list[float]] = {q: [] for q in QUANTIZATIONS}
        cpus: dict[Quantization, list[float]] = {q: [] for q in QUANTIZATIONS}
        hits: dict[Quantization, int] = dict.fromkeys(QUANTIZATIONS, 0)
        for _ in range(2):  # the first round warms the page cache and the mappings: only the second is kept
            for q in QUANTIZATIONS:
                walls[q].clear()
                cpus[q].clear()
                hits[q] = 0
            for i, query in enumerate(queries):
                for q in QUANTIZATIONS:
                    wall, cpu = time.perf_counter(), time.thread_time()
                    found = search_snapshot(snapshots[q], query, K)
                    cpus[q].append(time.thread_time() - cpu)
                    walls[q].append(time.perf_counter() - wall)
                    hits[q] += len({int(h.id[1:]) for h in found} & set(truth[i].tolist()))
        rows, figures = [], {}
        for q in QUANTIZATIONS:
            segment, build_s, build_cpu = built[q]
            path = cache.path(ref, segment, segments.INDEX_FILE)
            fig = {
                "stored_as": f"{segment.kind}/{segment.quantization or 'float32'}",
                "disk_bytes_per_vector": path.stat().st_size / args.vectors,
                "mapped_bytes_per_vector": mapped_bytes(path) / args.vectors,
                "recall_at_10": hits[q] / truth.size,
                "recall_at_build": segment.recall,
                "search_p50_ms": percentile(walls[q], 50) * 1e3,
                "search_p90_ms": percentile(walls[q], 90) * 1e3,
                "cpu_ms_per_query": sum(cpus[q]) / len(cpus[q]) * 1e3,
                "build_s": build_s,
                "build_cpu_s": build_cpu,
            }
            figures[q] = fig
            rows.append(
                [
                    q,
                    fig["stored_as"],
                    f"{fig['disk_bytes_per_vector']:.0f}",
                    f"{fig['mapped_bytes_per_vector']:.0f}",
                    f"{fig['recall_at_10']:.4f}",
                    "-" if segment.recall is None else f"{segment.recall:.4f}",
                    f"{fig['search_p50_ms']:.2f}",
                    f"{fig['search_p90_ms']:.2f}",
                    f"{fig['cpu_ms_per_query']:.2f}",
                    f"{build_s:.1f} ({build_cpu:.1f})",
                ]
            )
        out["figures"] = figures
    print(
        f"semaflow int8 against float32: {args.vectors:,} {args.data} vectors, one {args.kind} segment,"
        f" {args.queries} queries, k={K}, one FAISS thread"
    )
    print(
        table(
            [
                "quantization",
                "stored as",
                "disk B/vec",
                "mapped B/vec",
                "recall@10",
                "recall at build",
                "p50 ms",
                "p90 ms",
                "CPU ms/query",
                "build s (CPU s)",
            ],
            rows,
        )
    )
    none, int8 = figures["none"], figures["int8"]
    print(
        f"int8/float32: disk {int8['disk_bytes_per_vector'] / none['disk_bytes_per_vector']:.3f},"
        f" mapped {int8['mapped_bytes_per_vector'] / max(none['mapped_bytes_per_vector'], 1):.3f},"
        f" search p50 {ratio(int8['search_p50_ms'], none['search_p50_ms'])},"
        f" CPU/query {ratio(int8['cpu_ms_per_query'], none['cpu_ms_per_query'])}"
    )
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
    out["peak_rss_bytes"] = peak
    print(f"process peak RSS {peak / 2**20:,.0f} MiB (the vectors, the ground truth, both segments built and mapped)")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
