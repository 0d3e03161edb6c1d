"""Embedding a stored batch with the real model: chunked, cancellable, idempotent."""

from __future__ import annotations

import numpy as np
import pytest

from services.embedder.embedding import embed_stored_batch
from shared.errors import Cancelled
from shared.index.documents import Document, decode_vectors, encode_batch
from shared.index.embedding import Encoder
from shared.index.layout import CollectionRef
from shared.index.storage import LocalStore

REF = CollectionRef("acme", "docs", "c1")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load(batch_size=4)


def _stage(store: LocalStore, n: int) -> None:
    docs = [Document(id=f"d{i}", text=f"sentence number {i}") for i in range(n)]
    store.put(REF.batch_key("b1"), encode_batch(docs))


def test_vectors_are_written_once_every_chunk_is_encoded(store: LocalStore, encoder: Encoder) -> None:
    _stage(store, 40)  # 40 documents = 3 chunks of 4 model batches of 4
    assert embed_stored_batch(store, encoder, REF, "b1") == 40
    vectors = decode_vectors(store.get(REF.vectors_key("b1")))
    assert vectors.shape == (40, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[7], encoder.encode(["sentence number 7"])[0], atol=1e-5)


def test_a_cancellation_between_chunks_stops_without_writing(store: LocalStore, encoder: Encoder) -> None:
    _stage(store, 40)
    checks = []

    def cancelled_after_first_chunk() -> bool:
        checks.append(1)
        return len(checks) > 1

    with pytest.raises(Cancelled):
        embed_stored_batch(store, encoder, REF, "b1", should_stop=cancelled_after_first_chunk)
    assert len(checks) == 2
    assert not store.exists(REF.vectors_key("b1"))
