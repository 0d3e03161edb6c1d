"""Embedding a stored batch with the real model: chunked, cancellable, idempotent."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
import pytest

from services.embedder.embedding import embed_stored_batch
from shared.errors import Cancelled, InvalidInput
from shared.index.documents import Document, decode_vectors, encode_batch, normalize, put_batch
from shared.index.embedding import Encoder
from shared.index.layout import CollectionRef
from shared.index.storage import LocalStore

REF = CollectionRef("acme", "docs", "c1")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load(batch_size=4)


def _stage(store: LocalStore, n: int) -> None:
    docs = [Document(id=f"d{i}", text=f"sentence number {i}") for i in range(n)]
    put_batch(store, REF, "b1", encode_batch(docs))


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


class Recording(Encoder):
    """The real model on torch, recording the token count of each text of each model batch it runs."""

    def __init__(self, real: Encoder) -> None:
        super().__init__(real.model, batch_size=real.batch_size)
        self.batches: list[list[int]] = []
        start = self._torch_model._start

        def recording(inputs: dict[str, Any]) -> Any:
            self.batches.append(inputs["attention_mask"].sum(axis=1).tolist())
            return start(inputs)

        self._torch_model._start = recording  # type: ignore[method-assign]


def _varied(n: int) -> list[str]:
    """Texts of 1 to 40 words in no order of length (some past the model's 256 tokens when repeated)."""
    words = ["cells", "proteins", "binding", "assay", "mice", "tumour", "growth", "signal", "pathway", "dose"]
    return [" ".join(words[(i + j) % len(words)] for j in range(1 + (i * 7) % 40)) * (1 + i % 3) for i in range(n)]


def test_texts_are_encoded_most_tokens_first_across_the_batch_and_stored_in_document_order(
    store: LocalStore, encoder: Encoder
) -> None:
    texts = _varied(45)
    docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    docs[3] = Document(id="d3", vector=[3.0] + [0.0] * 383)  # a given vector keeps its place
    docs[20] = Document(id="d20", text="short", vector=[0.0, 2.0] + [0.0] * 382)
    put_batch(store, REF, "b1", encode_batch(docs))
    recording = Recording(encoder)
    progress: list[int] = []

    assert embed_stored_batch(store, recording, REF, "b1", on_progress=progress.append) == 45

    # 43 texts in one call: 11 model batches of 4, most tokens first across the whole batch; progress every
    # 4 model batches, the two given vectors counted from the start.
    assert [len(b) for b in recording.batches] == [4] * 10 + [3]
    lengths = [n for b in recording.batches for n in b]
    assert lengths == sorted(lengths, reverse=True)
    tokens = [len(encoder.model.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
    assert sorted(lengths) == sorted(tokens[i] for i in range(45) if i not in (3, 20))
    assert progress == [18, 34, 45]
    vectors = decode_vectors(store.get(REF.vectors_key("b1")))
    assert vectors[3][0] == 1.0 and vectors[20][1] == 1.0
    # The same vectors as sentence-transformers' own encode gives, a chunk at a time (cosine 1 to rounding).
    pending = [i for i in range(45) if i not in (3, 20)]
    chunks = [[texts[i] for i in pending[s : s + 16]] for s in range(0, 43, 16)]
    unsorted = np.concatenate([encoder.model.encode(c, batch_size=4, normalize_embeddings=True) for c in chunks])
    np.testing.assert_allclose(vectors[pending], unsorted, atol=2e-6)
    assert float(np.min(np.sum(vectors[pending] * unsorted, axis=1))) > 0.99999


def test_a_document_with_neither_text_nor_vector_fails_the_batch_before_any_encoding(
    store: LocalStore, encoder: Encoder
) -> None:
    docs = [Document(id=f"d{i}", text=f"sentence number {i}") for i in range(20)]
    broken = [*docs[:19], Document.model_construct(id="d19", text=None, vector=None)]
    put_batch(store, REF, "b1", encode_batch(broken))
    recording = Recording(encoder)
    with pytest.raises(InvalidInput):
        embed_stored_batch(store, recording, REF, "b1")
    assert recording.batches == []
    assert not store.exists(REF.vectors_key("b1"))


def test_a_batch_stored_with_its_vectors_on_its_lines_embeds_as_one_stored_apart(
    store: LocalStore, encoder: Encoder
) -> None:
    # Given the same documents (some with a vector, some text) stored in both formats: vectors apart, and as
    # an earlier version wrote them (the vectors as JSON numbers on the documents' lines)
    sent = np.random.default_rng(2).standard_normal((6, 384)).astype(np.float32) * 5
    docs = [
        Document(id=f"d{i}", vector=sent[i].tolist()) if i % 2 else Document(id=f"d{i}", text=f"sentence {i}")
        for i in range(6)
    ]
    put_batch(store, REF, "new", encode_batch(docs))
    lines = b"".join(d.model_dump_json(exclude_none=True).encode() + b"\n" for d in docs)
    store.put(REF.batch_key("old"), gzip.compress(lines, compresslevel=1, mtime=0))
    assert store.exists(REF.batch_vectors_key("new")) and not store.exists(REF.batch_vectors_key("old"))

    # When both are embedded
    assert embed_stored_batch(store, encoder, REF, "new") == embed_stored_batch(store, encoder, REF, "old") == 6

    # Then the given vectors come out normalised from exactly what was sent, alike in both
    new = decode_vectors(store.get(REF.vectors_key("new")))
    old = decode_vectors(store.get(REF.vectors_key("old")))
    assert new[1::2].tobytes() == old[1::2].tobytes() == normalize(sent[1::2]).tobytes()
    np.testing.assert_allclose(new[0::2], old[0::2], atol=1e-6)


def test_a_batch_of_vectors_only_is_stored_normalised_without_running_the_model(
    store: LocalStore, encoder: Encoder
) -> None:
    sent = np.random.default_rng(4).standard_normal((5, 384)).astype(np.float32)
    put_batch(store, REF, "b1", encode_batch([Document(id=f"d{i}", vector=sent[i].tolist()) for i in range(5)]))

    assert embed_stored_batch(store, encoder, REF, "b1") == 5

    assert decode_vectors(store.get(REF.vectors_key("b1"))).tobytes() == normalize(sent).tobytes()
    assert encoder.encode([]).shape == (0, 384)
