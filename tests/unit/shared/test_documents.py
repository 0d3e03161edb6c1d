from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shared.errors import CorruptObject
from shared.index.documents import Document, decode_batch, decode_vectors, encode_batch, encode_vectors, normalize


def test_batch_round_trip() -> None:
    docs = [Document(id="a", text="x", metadata={"k": 1}), Document(id="b", vector=[1.0] * 384)]
    assert decode_batch(encode_batch(docs)) == docs


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
