"""Index manifests: write-once, content-addressed lists of live segments and their tombstones."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from shared import constants as c
from shared.errors import CorruptObject, ObjectNotFound, PreconditionFailed

if TYPE_CHECKING:
    from pathlib import Path

    from shared.index.layout import CollectionRef
    from shared.index.storage import ObjectStore


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (a segment's index may not fit in memory twice)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


SegmentKind = Literal["flat", "hnsw", "ivf"]
# How a collection's segments hold their vectors: ``none`` as float32, ``int8`` as one byte per dimension
# (FAISS scalar quantiser ``QT_8bit``), each segment checked for recall at build (see :mod:`shared.index.approximate`).
Quantization = Literal["none", "int8"]

# Fields added after manifests were first written: left out of the JSON while unset, so a manifest
# written before them serializes (and hashes to its version) exactly as it did.
_OPTIONAL: Final = ("search_param", "recall", "quantization")


class SegmentRef(BaseModel):
    """One immutable segment and the documents of it that are deleted (or replaced) since.

    ``kind``: ``flat`` is an exact scan (every batch's segment); ``hnsw`` (a graph) and ``ivf``
    (inverted lists) are approximate indexes that compaction builds for large tiers, each searched on
    its own by the gateway with ``search_param`` (``efSearch`` or ``nprobe``), the smallest value
    whose ``recall`` (recall@10 against exact search over the segment, measured at build) reached the
    required minimum. ``quantization`` ``int8``: the index holds its rows as 8-bit codes (a flat segment
    is an ``IndexScalarQuantizer``, the approximate ones ``IndexHNSWSQ`` / ``IndexIVFScalarQuantizer``),
    and ``recall`` is measured against exact float32 search; None: float32 rows.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: SegmentKind = "flat"
    vectors: int
    files: dict[str, str]  # file name -> SHA-256
    deleted: tuple[str, ...] = ()
    search_param: int | None = None  # approximate segments: efSearch (hnsw) or nprobe (ivf)
    recall: float | None = None  # approximate or quantised segments: recall@10 measured (with search_param)
    quantization: Literal["int8"] | None = None  # None: float32 rows

    @model_serializer(mode="wrap")
    def _without_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        for name in _OPTIONAL:
            if data.get(name, 0) is None:
                del data[name]
        return data

    @property
    def live(self) -> int:
        """Documents of this segment still searchable."""
        return self.vectors - len(self.deleted)


class Manifest(BaseModel):
    """The full state of a collection's index at one version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    collection: str
    collection_id: str
    sequence: int
    parent: str | None
    created_at: datetime
    dim: int = c.EMBEDDING_DIM
    metric: Literal["inner_product"] = "inner_product"
    segments: tuple[SegmentRef, ...]
    version: str = ""

    @property
    def documents(self) -> int:
        """Live documents across all segments."""
        return sum(s.live for s in self.segments)

    def digest(self) -> str:
        """SHA-256 over the canonical JSON of everything but the version itself."""
        body = self.model_dump(mode="json", exclude={"version"})
        return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())

    def sealed(self) -> Manifest:
        """This manifest with its content-derived version: ``{sequence:010d}-{digest[:16]}``.

        The zero-padded sequence makes versions of one collection sort in publish order.
        """
        return self.model_copy(update={"version": f"{self.sequence:010d}-{self.digest()[:16]}"})

    def verify(self) -> None:
        """Raises:
        CorruptObject: the version does not match the content.
        """
        if self.sealed().version != self.version:
            raise CorruptObject(f"manifest {self.version} does not match its content")


def write(store: ObjectStore, ref: CollectionRef, manifest: Manifest) -> None:
    """Store a sealed manifest under its version; an identical existing one is accepted."""
    data = manifest.model_dump_json(indent=1).encode()
    try:
        store.put(ref.manifest_key(manifest.version), data, if_absent=True)
    except PreconditionFailed:
        # Write-once: the same version means the same content (it is derived from it), unless corrupt.
        read(store, ref, manifest.version)


def read(store: ObjectStore, ref: CollectionRef, version: str) -> Manifest:
    """Load and verify a manifest.

    Raises:
        ObjectNotFound: no such version.
        CorruptObject: it fails to parse or its content does not match its version.
    """
    data = store.get(ref.manifest_key(version))
    try:
        manifest = Manifest.model_validate_json(data)
    except ValueError as exc:
        raise CorruptObject(f"manifest {version}: {exc}") from exc
    if manifest.version != version:
        raise CorruptObject(f"manifest stored as {version} says {manifest.version}")
    manifest.verify()
    return manifest


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A stored version of a collection: when it was published and the bytes it holds (manifest and segments)."""

    version: str
    created_at: datetime
    bytes: int


def versions_page(
    store: ObjectStore, ref: CollectionRef, *, limit: int, before: str | None = None
) -> tuple[list[StoredVersion], str | None]:
    """Up to ``limit`` stored versions older than ``before`` (all, without it), newest first, and the cursor of
    the next page (None on the last).

    Lists the collection's manifests and segments (names and sizes), then reads the page's manifests only.

    Raises:
        StorageUnavailable: the store could not be reached.
    """
    prefix = f"{ref.prefix}manifests/"
    stored = {o.key.removeprefix(prefix).removesuffix(".json"): o.size for o in store.scan(prefix)}
    names = sorted((v for v in stored if before is None or v < before), reverse=True)
    page, more = names[:limit], len(names) > limit
    segment_prefix = f"{ref.prefix}segments/"
    segment_bytes: dict[str, int] = {}
    for obj in store.scan(segment_prefix):
        segment_id = obj.key.removeprefix(segment_prefix).split("/", 1)[0]
        segment_bytes[segment_id] = segment_bytes.get(segment_id, 0) + obj.size
    out: list[StoredVersion] = []
    for version in page:
        try:
            manifest = read(store, ref, version)
        except (ObjectNotFound, CorruptObject):
            continue  # removed by cleanup since the listing, or unusable: not a version to show
        size = stored[version] + sum(segment_bytes.get(s.id, 0) for s in manifest.segments)
        out.append(StoredVersion(version, manifest.created_at, size))
    return out, (page[-1] if more and page else None)


__all__ = [
    "Manifest",
    "ObjectNotFound",
    "Quantization",
    "SegmentKind",
    "SegmentRef",
    "StoredVersion",
    "read",
    "sha256",
    "sha256_file",
    "versions_page",
    "write",
]
