from __future__ import annotations

import gzip

import numpy as np
import pytest
from pydantic import ValidationError

from shared.errors import CorruptObject
from shared.index.documents import (
    Document,
    decode_batch,
    decode_vectors,
    encode_batch,
    encode_vectors,
    given_vectors,
    normalize,
)


def _legacy_batch(docs: list[Document]) -> bytes:
    """A batch file as written before vectors were kept apart: the vectors as JSON numbers on their lines."""
    lines = b"".join(d.model_dump_json(exclude_none=True).encode() + b"\n" for d in docs)
    return gzip.compress(lines, compresslevel=1, mtime=0)


def test_batch_round_trip() -> None:
    docs = [Document(id="a", text="x", metadata={"k": 1}), Document(id="b", vector=[1.0] * 384)]
    encoded = encode_batch(docs)
    batch = decode_batch(encoded.documents)
    assert batch.documents == [docs[0], Document(id="b")]
    given, vectors = given_vectors(batch, encoded.vectors)
    assert given == [1]
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, [[1.0] * 384])


def test_given_vectors_come_back_bit_for_bit_as_float32() -> None:
    sent = np.random.default_rng(3).standard_normal((4, 384)).astype(np.float32) * 1e-3
    docs = [
        Document(id="v0", vector=sent[0].tolist(), metadata={"n": 2**70, "s": ',"vector_row":9}'}),
        Document(id="t", text="only text"),
        Document(id="v1", text="both", vector=sent[1].tolist()),
        Document(id="v2", vector=sent[2].tolist(), metadata={"vector_row": 5}),
        Document(id="v3", vector=sent[3].tolist()),
    ]
    encoded = encode_batch(docs)
    assert encoded.vectors is not None
    batch = decode_batch(encoded.documents)
    assert batch.vector_rows == {0: 0, 2: 1, 3: 2, 4: 3}
    assert [d.model_copy(update={"vector": None}) for d in docs] == batch.documents
    given, vectors = given_vectors(batch, encoded.vectors)
    assert given == [0, 2, 3, 4]
    assert vectors.tobytes() == sent.tobytes()


def test_a_batch_with_no_vectors_has_no_vectors_object() -> None:
    encoded = encode_batch([Document(id="a", text="x")])
    assert encoded.vectors is None
    assert given_vectors(decode_batch(encoded.documents), None)[0] == []


def test_a_batch_written_with_vectors_on_its_lines_still_decodes() -> None:
    sent = np.random.default_rng(4).standard_normal((2, 384)).astype(np.float32)
    docs = [
        Document(id="a", vector=sent[0].tolist()),
        Document(id="b", text="x"),
        Document(id="c", vector=sent[1].tolist()),
    ]
    batch = decode_batch(_legacy_batch(docs))
    assert batch.documents == docs
    assert batch.vector_rows == {}
    given, vectors = given_vectors(batch, None)
    assert given == [0, 2]
    assert vectors.tobytes() == sent.tobytes()


def test_the_vectors_are_stored_in_binary_at_a_third_of_the_size() -> None:
    sent = np.random.default_rng(5).standard_normal((200, 384)).astype(np.float32)
    docs = [Document(id=f"d{i}", vector=row.tolist()) for i, row in enumerate(sent)]
    encoded = encode_batch(docs)
    assert encoded.vectors is not None
    stored = len(encoded.documents) + len(encoded.vectors)
    assert stored < 200 * (384 * 4 + 64)
    assert stored * 2 < len(_legacy_batch(docs))


def test_missing_or_mismatched_vectors_are_corrupt() -> None:
    docs = [Document(id="a", vector=[1.0] * 384), Document(id="b", vector=[2.0] * 384)]
    batch = decode_batch(encode_batch(docs).documents)
    with pytest.raises(CorruptObject, match="missing"):
        given_vectors(batch, None)
    with pytest.raises(CorruptObject, match="2 vector rows"):
        given_vectors(batch, encode_vectors(np.ones((1, 384))))
    with pytest.raises(CorruptObject):
        given_vectors(batch, b"not npy")


def test_corrupt_batch_raises() -> None:
    with pytest.raises(CorruptObject):
        decode_batch(b"not gzip")


def test_vectors_round_trip_without_pickle() -> None:
    v = normalize(np.random.default_rng(0).normal(size=(5, 384)))
    out = decode_vectors(encode_vectors(v))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, v)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_object_arrays_are_refused() -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptObject):
        decode_vectors(buf.getvalue())


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "", "text": "x"},
        {"id": "a/b", "text": "x"},
        {"id": "a", "vector": [0.0] * 384},
        {"id": "a", "vector": [1.0] * 10},
        {"id": "a", "text": "x", "extra": 1},
    ],
)
def test_invalid_documents_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Document.model_validate(bad)


def test_non_finite_vector_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Document.model_validate_json('{"id": "a", "vector": [' + ",".join(["1e999"] * 384) + "]}")


def test_a_vector_sent_as_decimals_is_stored_as_the_float32_the_embedder_always_made_of_it() -> None:
    decimals = np.round(np.random.default_rng(6).standard_normal((3, 384)), 6).tolist()  # float64, not float32
    docs = [Document(id=f"d{i}", vector=v) for i, v in enumerate(decimals)]
    encoded = encode_batch(docs)
    _, vectors = given_vectors(decode_batch(encoded.documents), encoded.vectors)
    assert vectors.tobytes() == np.asarray(decimals, dtype=np.float32).tobytes()
