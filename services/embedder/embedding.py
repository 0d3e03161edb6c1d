"""Embedding a stored batch: read its documents, encode the texts, write the vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from shared.errors import Cancelled, InvalidInput
from shared.index.documents import decode_batch, encode_vectors, normalize

if TYPE_CHECKING:
    from shared.index.embedding import Encoder
    from shared.index.layout import CollectionRef
    from shared.index.storage import ObjectStore

log = structlog.get_logger(__name__)

# Model batches encoded between two checks for cancellation: frequent enough to stop within a
# second or two on a CPU, rare enough to cost nothing (one Redis read per chunk).
CHUNK_BATCHES: Final = 4


def batch_vectors(encoder: Encoder, texts: list[str | None], given: list[list[float] | None]) -> np.ndarray[Any, Any]:
    """One unit vector per document: the given vector (normalised) or the encoded text.

    Raises:
        InvalidInput: a document has neither text nor vector.
    """
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    to_encode = [i for i, v in enumerate(given) if v is None]
    if any(texts[i] is None for i in to_encode):
        raise InvalidInput("a document has neither text nor vector")
    if to_encode:
        out[to_encode] = encoder.encode([texts[i] or "" for i in to_encode])
    provided = [i for i, v in enumerate(given) if v is not None]
    if provided:
        out[provided] = normalize(np.asarray([given[i] for i in provided], dtype=np.float32))
    return out


def embed_stored_batch(
    store: ObjectStore,
    encoder: Encoder,
    ref: CollectionRef,
    batch_id: str,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int], None] = lambda _done: None,
) -> int:
    """Embed batch ``batch_id`` and store ``vectors/{batch_id}.npy``; returns the document count.

    Encodes in chunks of a few model batches, asks ``should_stop`` between them and tells
    ``on_progress`` how many documents are encoded after each.
    Idempotent: a redelivered message recomputes and overwrites identical vectors.

    Raises:
        Cancelled: ``should_stop`` said so; nothing was written.
        InvalidInput: a document has neither text nor vector.
    """
    docs = decode_batch(store.get(ref.batch_key(batch_id)))
    chunk = max(1, encoder.batch_size * CHUNK_BATCHES)
    parts = []
    for start in range(0, len(docs), chunk):
        if should_stop():
            raise Cancelled(f"batch {batch_id} cancelled after {start} documents")
        part = docs[start : start + chunk]
        parts.append(batch_vectors(encoder, [d.text for d in part], [d.vector for d in part]))
        on_progress(start + len(part))
    if should_stop():
        raise Cancelled(f"batch {batch_id} cancelled")
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    store.put(ref.vectors_key(batch_id), encode_vectors(vectors))
    log.info("batch.embedded", batch_id=batch_id, collection=ref.name, documents=len(docs))
    return len(docs)
