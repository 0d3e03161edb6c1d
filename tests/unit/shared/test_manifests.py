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


# Written before segments recorded a search parameter and a measured recall (the version is its content's).
OLD_MANIFEST = b"""{"tenant": "acme", "collection": "docs", "collection_id": "c0ffee", "sequence": 7,
 "parent": "0000000006-0123456789abcdef", "created_at": "2026-01-01T00:00:00Z", "dim": 384,
 "metric": "inner_product", "segments": [
  {"id": "c0000000000001-abcd1234", "kind": "hnsw", "vectors": 3,
   "files": {"index.faiss": "abababababababababababababababababababababababababababababababab",
             "docs.jsonl.gz": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"},
   "deleted": ["d2"]},
  {"id": "b1", "kind": "flat", "vectors": 2,
   "files": {"index.faiss": "efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef"}, "deleted": []}],
 "version": "0000000007-e8f830a8a701ac34"}"""


def test_a_manifest_written_before_search_parameters_loads_with_its_version(store: LocalStore) -> None:
    version = "0000000007-e8f830a8a701ac34"
    store.put(REF.manifest_key(version), OLD_MANIFEST)
    loaded = manifests.read(store, REF, version)  # verifies the version against the content
    assert [(s.kind, s.search_param, s.recall) for s in loaded.segments] == [("hnsw", None, None), ("flat", None, None)]
    assert "search_param" not in loaded.model_dump_json() and loaded.sealed().version == version


def test_a_segments_search_parameter_and_recall_are_part_of_the_version(store: LocalStore) -> None:
    plain = _manifest()
    seg = plain.segments[0].model_copy(update={"kind": "hnsw", "search_param": 64, "recall": 0.97})
    checked = plain.model_copy(update={"segments": (seg,)}).sealed()
    assert checked.version != plain.version
    manifests.write(store, REF, checked)
    again = manifests.read(store, REF, checked.version)
    assert (again.segments[0].search_param, again.segments[0].recall) == (64, 0.97)
