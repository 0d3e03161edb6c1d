"""Documents as accepted by the API and stored in batch files (given vectors apart, float32); vectors as ``.npy``."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import constants as c
from shared.errors import CorruptObject

if TYPE_CHECKING:
    from shared.index.layout import CollectionRef
    from shared.index.storage import ObjectStore

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

    def sent_vector(self) -> np.ndarray[Any, np.dtype[np.float32]] | None:
        """The vector this document came with, as float32 (None: none)."""
        if self.vector is None:
            return None
        if isinstance(self.vector, CheckedVector):  # float64 to float32 rounds as a list to float32 does
            return self.vector.checked.astype(np.float32)
        return np.asarray(self.vector, dtype=np.float32)

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


class CheckedVector(list[float]):
    """A vector that passed :func:`check_vector`, with the array it was checked as (converting a list of 384
    floats is most of a vector's validation time: made once, and not again when the batch is stored)."""

    __slots__ = ("checked",)

    def __init__(self, values: list[float], checked: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        super().__init__(values)
        self.checked = checked


def check_vector(value: list[float] | None) -> list[float] | None:
    """Accept a vector only if it is finite and not all zeros (it must survive normalisation)."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    check_array(arr)
    return CheckedVector(value, arr)


def check_array(arr: np.ndarray[Any, Any]) -> None:
    """What :func:`check_vector` asks of a vector, of an array.

    Raises:
        ValueError: a value is not finite or beyond float32's range, or all are zero.
    """
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if 0.0 < peak <= _FLOAT32_MAX:  # the one test a usable vector takes (NaN compares false)
        return
    if not np.all(np.isfinite(arr)):
        raise ValueError("must contain only finite numbers")
    if peak > _FLOAT32_MAX:
        raise ValueError("must contain only numbers a 32-bit float can hold")
    raise ValueError("must not be all zeros")


class EncodedBatch(NamedTuple):
    """A batch as stored: its documents as gzipped JSON lines, and the vectors they came with (None: none did)."""

    documents: bytes
    vectors: bytes | None


class DecodedBatch(NamedTuple):
    """A stored batch read back: its documents, and where the vectors kept apart from them are."""

    documents: list[Document]
    # Document index -> row of the batch's vectors object. Those documents' ``vector`` is None; a batch
    # written before vectors were kept apart has its vectors on its documents and no rows here.
    vector_rows: dict[int, int]


# Key of a batch line whose vector is a row of the batch's vectors object; always the line's last key.
_ROW_KEY: Final = b',"vector_row":'


def encode_batch(documents: Sequence[Document]) -> EncodedBatch:
    """Gzipped JSON lines, one document per line, and the documents' vectors as one float32 ``.npy``.

    A vector is stored as the float32 values it was sent as (bit for bit), not normalised; a line whose
    document came with one names its row. Raw float32 costs 1.5 KB per vector and no deflate work (random
    mantissas hardly compress), where decimal text in the gzipped lines cost about 3.7 KB and most of the
    encoding time.
    """
    rows: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz:
        for doc in documents:
            line = doc.model_dump_json(exclude_none=True, exclude={"vector"}).encode()
            sent = doc.sent_vector()
            if sent is not None:
                line = b"%s%s%d}" % (line[:-1], _ROW_KEY, len(rows))
                rows.append(sent)
            gz.write(line)
            gz.write(b"\n")
    vectors = encode_vectors(np.stack(rows)) if rows else None
    return EncodedBatch(buf.getvalue(), vectors)


def put_batch(store: ObjectStore, ref: CollectionRef, batch_id: str, batch: EncodedBatch) -> None:
    """Store an encoded batch: its vectors first, so that a stored batch file never names vectors that are not there
    (a write that dies in between leaves vectors no job refers to, which cleanup removes with their batch id)."""
    if batch.vectors is not None:
        store.put(ref.batch_vectors_key(batch_id), batch.vectors)
    store.put(ref.batch_key(batch_id), batch.documents)


def _split_row(line: bytes) -> tuple[bytes, int | None]:
    """A stored line without its ``vector_row`` key, and that row (None when it has none)."""
    head, found, tail = line.rpartition(_ROW_KEY)
    if not found or not tail.endswith(b"}") or not tail[:-1].isdigit():
        return line, None
    return head + b"}", int(tail[:-1])


def decode_batch(data: bytes) -> DecodedBatch:
    """Parse a stored batch file (of this version, or of one that kept vectors on the documents).

    Raises:
        CorruptObject: the bytes are not a valid batch file.
    """
    documents: list[Document] = []
    rows: dict[int, int] = {}
    try:
        for line in gzip.decompress(data).splitlines():
            if not line:
                continue
            text, row = _split_row(line)
            if row is not None:
                rows[len(documents)] = row
            documents.append(Document.model_validate_json(text))
    except (OSError, EOFError, ValueError) as exc:
        raise CorruptObject(f"invalid batch file: {exc}") from exc
    if sorted(rows.values()) != list(range(len(rows))):
        raise CorruptObject("invalid batch file: its vector rows are not 0, 1, 2, ...")
    return DecodedBatch(documents, rows)


def given_vectors(
    batch: DecodedBatch, vectors: bytes | None
) -> tuple[list[int], np.ndarray[Any, np.dtype[np.float32]]]:
    """The indexes of the documents that came with a vector, and those vectors as float32 rows, as sent.

    ``vectors`` is the batch's vectors object (None when the batch has no rows there).

    Raises:
        CorruptObject: the vectors object is missing, invalid, or of another number of rows.
    """
    given = sorted({i for i, d in enumerate(batch.documents) if d.vector is not None} | batch.vector_rows.keys())
    out = np.empty((len(given), c.EMBEDDING_DIM), dtype=np.float32)
    stored = None
    if batch.vector_rows:
        if vectors is None:
            raise CorruptObject("the batch file names vector rows but its vectors object is missing")
        stored = decode_vectors(vectors)
        if len(stored) != len(batch.vector_rows):
            raise CorruptObject(
                f"the batch names {len(batch.vector_rows)} vector rows; its vectors object has {len(stored)}"
            )
    for k, i in enumerate(given):
        row = batch.vector_rows.get(i)
        if row is not None and stored is not None:
            out[k] = stored[row]
        else:
            out[k] = batch.documents[i].vector
    return given, out


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
