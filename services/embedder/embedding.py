"""Embedding a stored batch: read its documents, encode the texts, write the vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.documents import decode_batch, encode_vectors, normalize
from shared.errors import InvalidInput

if TYPE_CHECKING:
    from shared.embedding import Encoder
    from shared.layout import CollectionRef
    from shared.storage import ObjectStore

log = structlog.get_logger(__name__)


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


def embed_stored_batch(store: ObjectStore, encoder: Encoder, ref: CollectionRef, batch_id: str) -> int:
    """Embed batch ``batch_id`` and store ``vectors/{batch_id}.npy``; returns the document count.

    Idempotent: a redelivered message recomputes and overwrites identical vectors.
    """
    docs = decode_batch(store.get(ref.batch_key(batch_id)))
    vectors = batch_vectors(encoder, [d.text for d in docs], [d.vector for d in docs])
    store.put(ref.vectors_key(batch_id), encode_vectors(vectors))
    log.info("batch.embedded", batch_id=batch_id, collection=ref.name, documents=len(docs))
    return len(docs)
