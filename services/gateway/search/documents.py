"""Reading documents back from a collection's published index: one by id, or all of them page by page.

Both answer from the snapshot a search would use (the version live now), so a document is readable
exactly when it is searchable: once its ingest job succeeded, and no longer once its deletion did.

Pages come in document-id order and a cursor is the last id of its page (see
:mod:`services.gateway.search.lookup`): read from one version, the pages hold every document once; if a
newer version is published between two pages, the next page continues after that id in the newer
version (documents added meanwhile with greater ids appear, deleted ones do not, none repeats).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any, Final

from services.gateway.search.lookup import find, page
from shared.api.schemas import DocumentPage, DocumentRecord, DocumentSummary
from shared.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from services.gateway.search.snapshots import IndexRegistry, Snapshot
    from services.gateway.search.texts import TextCache
    from shared.records.catalog import Collection

_CURSOR_FORM: Final = b"\x01"  # the cursor's form, first: a later form can tell its own cursors apart


def encode_cursor(after: str) -> str:
    """The opaque cursor of the page after document ``after``: base64url, no padding."""
    return base64.urlsafe_b64encode(_CURSOR_FORM + after.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    """The document id a cursor continues after.

    Raises:
        BadRequest: it is not a cursor this API handed out.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = raw[1:].decode() if raw[:1] == _CURSOR_FORM else ""
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        after = ""
    if not after:
        raise BadRequest("The cursor is not one this API handed out; list from the start without one.")
    return after


class DocumentReader:
    """Documents of a collection's live index version, with their texts from the segments' texts files."""

    def __init__(self, registry: IndexRegistry, texts: TextCache, *, freshness_wait_s: float = 0.0) -> None:
        self.registry = registry
        self.texts = texts
        self.freshness_wait_s = freshness_wait_s

    async def _snapshot(self, record: Collection, latest: str | None) -> Snapshot | None:
        snapshot = await self.registry.serving(record, latest, self.freshness_wait_s)
        return snapshot if snapshot is not None and snapshot.version is not None else None

    async def get(self, record: Collection, latest: str | None, doc_id: str, *, vector: bool = False) -> DocumentRecord:
        """The document ``doc_id``: its text, metadata and the version read (with its vector if asked).

        Raises:
            NotFound: it is not in the collection's published index (never indexed yet, or deleted).
        """
        snapshot = await self._snapshot(record, latest)
        located = find(snapshot, doc_id) if snapshot is not None else None
        if snapshot is None or snapshot.version is None or located is None:
            version = f"version {snapshot.version}" if snapshot is not None else "no version published yet"
            raise NotFound(
                f"document {doc_id!r} is not in the published index of collection {record.name!r} ({version}): "
                "it was never indexed, is not indexed yet (its ingest job has not succeeded), or was deleted"
            )
        (text,) = await asyncio.to_thread(self.texts.read, snapshot.ref, located.segment, [located.row])
        fields: dict[str, Any] = {
            "id": doc_id,
            "text": text,
            "metadata": located.metadata,
            "index_version": snapshot.version,
        }
        if vector:
            fields["vector"] = located.segment.vector(located.row).tolist()
        return DocumentRecord(**fields)

    async def listing(self, record: Collection, latest: str | None, cursor: str | None, limit: int) -> DocumentPage:
        """A page of up to ``limit`` documents in id order, after the one ``cursor`` names.

        Raises:
            BadRequest: ``cursor`` is not one this API handed out.
        """
        after = decode_cursor(cursor) if cursor is not None else None
        snapshot = await self._snapshot(record, latest)
        if snapshot is None:
            return DocumentPage(documents=[], next_cursor=None, index_version=None)
        found, more = await asyncio.to_thread(page, snapshot, after, limit)
        return DocumentPage(
            documents=[DocumentSummary(id=d.id, metadata=d.metadata) for d in found],
            next_cursor=encode_cursor(found[-1].id) if more and found else None,
            index_version=snapshot.version,
        )
