"""Documents, vectors, segments and manifests, and the object store that holds them."""

__all__ = [
    "backend_choice",
    "documents",
    "embedding",
    "index_stats",
    "layout",
    "manifests",
    "openvino_model",
    "segments",
    "storage",
]
