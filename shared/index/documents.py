"""Documents as accepted by the API and stored in batch files; vectors as ``.npy`` bytes."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import constants as c
from shared.errors import CorruptObject

# Numbers only (JSON's true and false are not 1 and 0 here); integers are fine.
Vector = list[Annotated[float, Field(strict=True)]]


def needs_one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema: at least one of ``fields`` is present and not null."""
    return {"anyOf": [{"required": [f], "not": {"properties": {f: {"type": "null"}}}} for f in fields]}


class Document(BaseModel):
    """One document: an id, text and/or a precomputed vector, and filterable metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=needs_one_of("text", "vector"))

    id: str = Field(min_length=1, max_length=c.MAX_ID_LENGTH, pattern=r"^[^/\x00-\x1f\x7f]+$")
    text: str | None = Field(default=None, max_length=c.MAX_TEXT_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    vector: Vector | None = Field(default=None, min_length=c.EMBEDDING_DIM, max_length=c.EMBEDDING_DIM)

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        if not value.isprintable() or "/" in value:
            raise ValueError("must be printable and contain no '/'")
        return value

    @field_validator("vector")
    @classmethod
    def _usable_vector(cls, value: list[float] | None) -> list[float] | None:
        return check_vector(value)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_vector(value: list[float] | None) -> list[float] | None:
    """Accept a vector only if it is finite and not all zeros (it must survive normalisation)."""
    if value is not None:
        arr = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("must contain only finite numbers")
        if arr.size and float(np.abs(arr).max()) > _FLOAT32_MAX:
            raise ValueError("must contain only numbers a 32-bit float can hold")
        if not np.any(arr):
            raise ValueError("must not be all zeros")
    return value


def encode_batch(documents: Sequence[Document]) -> bytes:
    """Gzipped JSON lines, one document per line."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz:
        for doc in documents:
            gz.write(doc.model_dump_json(exclude_none=True).encode())
            gz.write(b"\n")
    return buf.getvalue()


def decode_batch(data: bytes) -> list[Document]:
    """Parse a stored batch.

    Raises:
        CorruptObject: the bytes are not a valid batch file.
    """
    try:
        lines = gzip.decompress(data).splitlines()
        return [Document.model_validate_json(line) for line in lines if line]
    except (OSError, EOFError, ValueError) as exc:
        raise CorruptObject(f"invalid batch file: {exc}") from exc


def normalize(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Rows scaled to unit L2 norm, as contiguous float32 (computed in float64: huge or tiny rows neither
    overflow nor vanish)."""
    arr = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def encode_vectors(vectors: np.ndarray[Any, Any]) -> bytes:
    """``.npy`` bytes of a float32 matrix."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def decode_vectors(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Load ``.npy`` bytes without ever unpickling.

    Raises:
        CorruptObject: not a 2-D float32 array of the embedding width.
    """
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptObject(f"invalid vectors file: {exc}") from exc
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != c.EMBEDDING_DIM:
        raise CorruptObject(f"vectors have shape {arr.shape} and dtype {arr.dtype}")
    return arr  # type: ignore[no-any-return]


def metadata_line(doc_id: str, metadata: dict[str, Any]) -> bytes:
    """One sidecar row: the document id and its metadata."""
    return json.dumps({"id": doc_id, "metadata": metadata}, separators=(",", ":")).encode()
