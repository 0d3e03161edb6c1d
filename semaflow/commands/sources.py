"""Documents read from a file for ``semaflow ingest``: JSON Lines, JSON, CSV or Parquet, each optionally gzipped."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from semaflow.commands.output import UsageError

FORMATS: Final = ("jsonl", "json", "csv", "parquet")
_SUFFIXES: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Fields a record may carry a precomputed vector in; passed on as they are, never as metadata.
_VECTOR_FIELDS: Final = ("vector", "vector_b64")


@dataclass(frozen=True)
class FieldMap:
    """Which fields of a record make a document's id, text and metadata (None: every other field)."""

    id_field: str = "id"
    text_field: str = "text"
    metadata_fields: Sequence[str] | None = None

    def document(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """The ingest document of one record.

        Raises:
            UsageError: the record is not an object, or has no id.
        """
        if not isinstance(record, dict):
            raise UsageError(f"{where}: a record must be an object, not {type(record).__name__}")
        doc_id = record.get(self.id_field)
        if doc_id is None or doc_id == "":
            raise UsageError(f"{where}: no {self.id_field!r} field (choose the id's field with --id-field)")
        doc: dict[str, Any] = {"id": str(doc_id)}
        text = record.get(self.text_field)
        if text is not None and text != "":
            doc["text"] = str(text)
        for name in _VECTOR_FIELDS:
            if record.get(name) is not None:
                doc[name] = record[name]
        if self.metadata_fields is not None:
            metadata = {k: record[k] for k in self.metadata_fields if k in record}
        else:
            metadata = {}
            for key, value in record.items():
                if key in (self.id_field, self.text_field, *_VECTOR_FIELDS):
                    continue
                if key == "metadata" and isinstance(value, dict):
                    # A record already in the API's own shape: its metadata object is the metadata.
                    metadata.update(value)
                else:
                    metadata[key] = value
        if metadata:
            doc["metadata"] = metadata
        return doc


def file_format(path: Path, given: str | None) -> str:
    """The file's format: ``given``, else its suffix (before a ``.gz``).

    Raises:
        UsageError: the suffix names no known format.
    """
    if given:
        return given
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UsageError(f"{path}: unknown format (name it .jsonl, .json, .csv or .parquet, or pass --format)")
    return fmt


def fingerprint(path: Path) -> str:
    """What identifies the file's content: SHA-256 of its bytes (a rewritten file is another file)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{n}", json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path.name}:{n}: not JSON: {exc}") from exc


def _json(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as fh:
        try:
            data = json.load(fh)
        except ValueError as exc:
            raise UsageError(f"{path.name}: not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("documents"), list):
        data = data["documents"]
    if not isinstance(data, list):
        raise UsageError(f"{path.name}: expected a JSON array of records (or {{'documents': [...]}})")
    for n, record in enumerate(data):
        yield f"{path.name}[{n}]", record


def _csv(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            yield f"{path.name}:{n}", dict(row)


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UsageError("reading .parquet needs pyarrow: pip install 'semaflow[parquet]'") from exc
    source: Any = io.BytesIO(gzip.decompress(path.read_bytes())) if path.suffix.lower() == ".gz" else path
    table = pq.ParquetFile(source)
    n = 0
    for batch in table.iter_batches(batch_size=1000):
        for record in batch.to_pylist():
            yield f"{path.name}[row {n}]", record
            n += 1


_READERS: Final = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}


def records(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """Each record of the file with where it is (``name:line`` or ``name[index]``), read lazily."""
    return _READERS[fmt](path)


def documents(path: Path, fmt: str, mapping: FieldMap) -> Iterator[dict[str, Any]]:
    """Each record of the file as an ingest document."""
    for where, record in records(path, fmt):
        yield mapping.document(record, where)


def count(path: Path, fmt: str) -> int:
    """How many records the file holds (a quick pass; a Parquet file says so in its footer)."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise UsageError("reading .parquet needs pyarrow: pip install 'semaflow[parquet]'") from exc
        if path.suffix.lower() != ".gz":
            return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "jsonl":
        with _open_text(path) as fh:
            return sum(1 for line in fh if line.strip())
    return sum(1 for _ in records(path, fmt))
