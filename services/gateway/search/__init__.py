"""The gateway's search engine: loaded snapshots swapped on publish, the query model, FAISS, the cache."""

__all__ = [
    # answering a search: snapshot, cache, query model, engine, in that order
    "pipeline",
    # one snapshot searched with FAISS
    "engine",
    # the loaded snapshots, swapped atomically
    "snapshots",
    "querymodel",
    "cache",
    "indexmetrics",
]
