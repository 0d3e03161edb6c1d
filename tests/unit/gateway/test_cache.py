"""The search cache's keys and its in-process TTL LRU."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.search.cache import CacheKey, TtlLru, digest, normalise_query


def _key(n: int, collection: str = "docs") -> CacheKey:
    return CacheKey("acme", collection, "c1", "0000000001-ab", f"d{n}")


def test_query_texts_differing_only_in_whitespace_or_unicode_form_share_a_digest() -> None:
    assert normalise_query("  a \t kitten\n") == "a kitten"
    assert digest(k=5, filters={}, text="caf\u00e9") == digest(k=5, filters={}, text="cafe\u0301")
    assert digest(k=5, filters={}, text="a kitten") != digest(k=5, filters={}, text="A kitten")


def test_k_filter_and_kind_of_query_are_part_of_the_digest() -> None:
    base = digest(k=5, filters={"a": 1, "b": "x"}, text="q")
    assert base == digest(k=5, filters={"b": "x", "a": 1}, text="q")
    assert base != digest(k=6, filters={"a": 1, "b": "x"}, text="q")
    assert base != digest(k=5, filters={"a": 2, "b": "x"}, text="q")
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    assert digest(k=5, filters={}, vector=vector) != digest(k=5, filters={}, text="q")


def test_lru_evicts_the_least_recently_used_and_drops_a_collection() -> None:
    lru = TtlLru(max_entries=2, ttl_s=60)
    lru.put(_key(1), b"one")
    lru.put(_key(2), b"two")
    assert lru.get(_key(1)) == b"one"  # now 2 is the least recently used
    lru.put(_key(3, "other"), b"three")
    assert lru.get(_key(2)) is None and lru.get(_key(1)) == b"one"
    assert lru.drop_collection("acme", "docs") == 1
    assert len(lru) == 1 and lru.get(_key(3, "other")) == b"three"


def test_lru_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("services.gateway.search.cache.time.monotonic", lambda: now[0])
    lru = TtlLru(max_entries=10, ttl_s=60)
    lru.put(_key(1), b"one")
    now[0] += 59.9
    assert lru.get(_key(1)) == b"one"
    now[0] += 0.2
    assert lru.get(_key(1)) is None and len(lru) == 0
