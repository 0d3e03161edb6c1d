from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.errors import CorruptObject
from shared.index import manifests
from shared.index.layout import CollectionRef
from shared.index.manifests import Manifest, SegmentRef
from shared.index.storage import LocalStore

REF = CollectionRef("acme", "docs", "c0ffee")


def _manifest(sequence: int = 1, deleted: tuple[str, ...] = ()) -> Manifest:
    seg = SegmentRef(id="s1", vectors=3, files={"index.faiss": "ab" * 32}, deleted=deleted)
    return Manifest(
        tenant="acme",
        collection="docs",
        collection_id="c0ffee",
        sequence=sequence,
        parent=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        segments=(seg,),
    ).sealed()


def test_version_is_derived_from_content() -> None:
    assert _manifest().version == _manifest().version
    assert _manifest().version != _manifest(deleted=("a",)).version


def test_versions_sort_in_publish_order() -> None:
    versions = [_manifest(sequence=n).version for n in (1, 2, 9, 10, 123)]
    assert versions == sorted(versions)


def test_documents_excludes_tombstones() -> None:
    assert _manifest(deleted=("a", "b")).documents == 1


def test_round_trip_through_the_store(store: LocalStore) -> None:
    m = _manifest()
    manifests.write(store, REF, m)
    assert manifests.read(store, REF, m.version) == m


def test_rewriting_the_same_version_is_accepted(store: LocalStore) -> None:
    m = _manifest()
    manifests.write(store, REF, m)
    manifests.write(store, REF, m)


def test_tampered_manifest_is_rejected(store: LocalStore) -> None:
    m = _manifest()
    manifests.write(store, REF, m)
    key = REF.manifest_key(m.version)
    store.put(key, store.get(key).replace(b'"vectors": 3', b'"vectors": 4'))
    with pytest.raises(CorruptObject):
        manifests.read(store, REF, m.version)
