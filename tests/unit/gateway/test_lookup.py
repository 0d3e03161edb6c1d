"""Finding documents in a snapshot, paging through them in id order, and the page cursor."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.gateway.search.documents import decode_cursor, encode_cursor
from services.gateway.search.lookup import find, page
from services.gateway.search.snapshots import Snapshot
from shared.errors import BadRequest
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.segments import LoadedSegment


def _snapshot() -> tuple[Snapshot, set[str]]:
    """Three segments of shuffled ids; some rows deleted, and "k05" replaced (its older row deleted)."""
    rng = random.Random(4)
    ids = [f"k{i:02d}" for i in range(60) if i != 5]
    rng.shuffle(ids)
    ids.insert(10, "k05")  # in the first segment, and again in the last
    parts = []
    for s, chunk in enumerate((ids[:25], ids[25:50], [*ids[50:], "k05"])):
        vectors = normalize(np.random.default_rng(s).normal(size=(len(chunk), 384)))
        seg = LoadedSegment(f"s{s}", vectors, chunk, [{"seg": s, "id": d} for d in chunk])
        parts.append((seg, seg))
    deleted = {"k07", "k33", "k59", "k00"}
    last = len(parts) - 1
    built = [
        (seg, tuple(sorted(d for d in deleted | ({"k05"} if i != last else set()) if seg.row_of(d) is not None)))
        for i, (seg, _) in enumerate(parts)
    ]
    live = (set(ids) | {"k05"}) - deleted
    return Snapshot.build(CollectionRef("t", "c", "x"), "v1", built), live


def test_find_answers_the_live_row_and_nothing_for_deleted_or_unknown_ids() -> None:
    snapshot, _ = _snapshot()
    found = find(snapshot, "k05")
    assert found is not None and found.segment.id == "s2" and found.metadata == {"seg": 2, "id": "k05"}
    assert found.id == "k05"
    assert find(snapshot, "k07") is None
    assert find(snapshot, "nope") is None


@pytest.mark.parametrize("limit", [1, 7, 56, 100])
def test_pages_hold_every_live_document_once_in_id_order(limit: int) -> None:
    snapshot, live = _snapshot()
    seen: list[str] = []
    after = None
    while True:
        docs, more = page(snapshot, after, limit)
        assert len(docs) <= limit
        seen += [d.id for d in docs]
        if not more:
            break
        assert len(docs) == limit
        after = docs[-1].id
    assert seen == sorted(live)
    assert all(d.metadata["id"] == d.id for d in page(snapshot, None, 100)[0])


def test_a_page_after_an_id_not_in_the_index_starts_at_the_next_one() -> None:
    snapshot, live = _snapshot()
    docs, _ = page(snapshot, "k07", 3)  # deleted meanwhile
    assert [d.id for d in docs] == sorted(d for d in live if d > "k07")[:3]
    assert page(snapshot, "zzz", 10) == ([], False)


def test_an_empty_snapshot_has_one_empty_page() -> None:
    assert page(Snapshot(CollectionRef("t", "c", "x"), None), None, 10) == ([], False)


@pytest.mark.parametrize("doc_id", ["a", "k05", "caf\u00e9/\u2603", "x" * 256, "-_=+"])
def test_a_cursor_round_trips_its_document_id(doc_id: str) -> None:
    cursor = encode_cursor(doc_id)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == doc_id


@pytest.mark.parametrize("cursor", ["AA", "abc", "YQ", "Af8", "A"])
def test_a_cursor_the_api_did_not_hand_out_is_refused(cursor: str) -> None:
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor(cursor)
