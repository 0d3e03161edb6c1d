"""Keys verified lately: honoured for their time, forgotten when Redis refuses them, bounded in number."""

from __future__ import annotations

from datetime import UTC, datetime

from services.gateway.http.keycache import VerifiedKeys
from shared.records.apikeys import ApiKey, Role

RECORD = ApiKey(id="key_1", tenant="acme", role=Role.READER, created_at=datetime(2024, 1, 1, tzinfo=UTC))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_confirmed_key_is_recalled_until_its_time_is_up() -> None:
    clock = Clock()
    keys = VerifiedKeys(60, clock=clock)
    keys.confirmed("h", RECORD)
    clock.now += 59.9
    assert keys.recall("h") == RECORD
    clock.now += 0.1
    assert keys.recall("h") is None
    assert len(keys) == 0


def test_a_new_confirmation_restarts_the_time() -> None:
    clock = Clock()
    keys = VerifiedKeys(60, clock=clock)
    keys.confirmed("h", RECORD)
    clock.now += 50
    keys.confirmed("h", RECORD)
    clock.now += 50
    assert keys.recall("h") == RECORD


def test_a_key_redis_refuses_is_forgotten_at_once() -> None:
    keys = VerifiedKeys(60)
    keys.confirmed("h", RECORD)
    keys.refused("h")
    assert keys.recall("h") is None


def test_a_zero_time_remembers_nothing() -> None:
    keys = VerifiedKeys(0)
    keys.confirmed("h", RECORD)
    assert keys.recall("h") is None


def test_the_least_recently_confirmed_key_goes_first_when_full() -> None:
    keys = VerifiedKeys(60, max_entries=2)
    for key_hash in ("a", "b", "c"):
        keys.confirmed(key_hash, RECORD)
    assert keys.recall("a") is None
    assert keys.recall("b") == RECORD and keys.recall("c") == RECORD
