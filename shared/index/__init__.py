"""Documents, vectors, segments and manifests, and the object store that holds them."""

__all__ = [
    "documents",
    "embedding",
    "index_stats",
    "layout",
    "manifests",
    "segments",
    "storage",
]
