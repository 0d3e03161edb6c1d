"""Finding documents in a snapshot by id, and paging through all of them in id order.

A document is where its id has a live row: a replaced document's older rows are tombstoned, so at most
one segment holds it live. Paging merges the segments' rows in document-id order (each segment sorts
its rows once, on first use), so a page after the id ``after`` costs a binary search per segment plus
the rows it returns: bounded however deep the page is. The order is a property of the ids alone, so a
cursor (the last id of a page) continues correctly in any later version too: no document is listed
twice, and one that stayed in the index throughout is listed once.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.gateway.search.snapshots import LiveSegment, Snapshot
    from shared.index.segments import LoadedSegment


@dataclass(frozen=True, slots=True)
class Located:
    """A live document: the segment holding it and its row there."""

    segment: LoadedSegment
    row: int

    @property
    def id(self) -> str:
        """The document's id."""
        return self.segment.ids[self.row]

    @property
    def metadata(self) -> dict[str, Any]:
        """The document's metadata."""
        return self.segment.metadata[self.row]


def find(snapshot: Snapshot, doc_id: str) -> Located | None:
    """Where ``doc_id`` is live in ``snapshot`` (None: not in this version, or deleted)."""
    for live in snapshot.segments:
        row = live.segment.row_of(doc_id)
        if row is not None and live.live[row]:
            return Located(live.segment, row)
    return None


def _after(position: int, live: LiveSegment, after: str | None) -> Iterator[tuple[str, int, int]]:
    """A segment's live rows whose ids sort after ``after``, in id order, as ``(id, position, row)``."""
    seg = live.segment
    order = seg.id_order()
    ids = seg.ids
    start = 0 if after is None else bisect.bisect_right(order, after, key=lambda row: ids[row])
    mask = live.live
    for row in order[start:].tolist():
        if mask[row]:
            yield ids[row], position, row


def page(snapshot: Snapshot, after: str | None, limit: int) -> tuple[list[Located], bool]:
    """Up to ``limit`` live documents whose ids sort after ``after``, in id order, and whether more follow.

    Blocking (the first page of a new segment sorts its rows): run it in a thread.
    """
    streams = [_after(i, live, after) for i, live in enumerate(snapshot.segments)]
    out: list[Located] = []
    for _doc_id, i, row in heapq.merge(*streams):
        if len(out) == limit:
            return out, True
        out.append(Located(snapshot.segments[i].segment, row))
    return out, False
