"""Where a collection's objects live in the store: ``{tenant}/{collection}/{collection_id}/...``.

The ``collection_id`` is minted when a collection is created, so a collection deleted and created
again under the same name never sees (or removes) the objects of its predecessor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CollectionRef:
    """Identifies one incarnation of a tenant's collection."""

    tenant: str
    name: str
    id: str

    @property
    def prefix(self) -> str:
        """Key prefix of every object of this collection (ends with a slash)."""
        return f"{self.tenant}/{self.name}/{self.id}/"

    def batch_key(self, batch_id: str) -> str:
        """Accepted documents of a batch (gzipped JSON lines)."""
        return f"{self.prefix}batches/{batch_id}.jsonl.gz"

    def batch_vectors_key(self, batch_id: str) -> str:
        """The vectors a batch's documents came with, as sent (float32 .npy, no pickle); written before the batch."""
        return f"{self.prefix}batches/{batch_id}.vectors.npy"

    def vectors_key(self, batch_id: str) -> str:
        """A batch's float32, L2-normalised vectors (.npy, no pickle)."""
        return f"{self.prefix}vectors/{batch_id}.npy"

    def segment_key(self, segment_id: str, name: str) -> str:
        """A file of a segment: ``index.faiss`` or ``docs.jsonl.gz``."""
        return f"{self.prefix}segments/{segment_id}/{name}"

    def manifest_key(self, version: str) -> str:
        """A write-once manifest."""
        return f"{self.prefix}manifests/{version}.json"
