"""What semaflow relies on in Dramatiq's Redis broker beyond its public API, pinned against a real Redis.

Counting a queue's tokens (:func:`shared.messaging.dispatch.tokens_without_claim`, the gateway's queue
statistics) reads Dramatiq's keys directly: the names in :mod:`shared.keys` must match where
Dramatiq keeps a queue's messages. Work-queue claims are recorded under a token's message id, which
must survive a retry and a dead worker's redelivery. A Dramatiq upgrade that changes any of this
fails here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from shared import keys
from shared.config import Settings
from shared.runtime.broker import build_broker

QUEUE = "contract"
# Dramatiq's scale for ``maintenance_chance``: at this value every command runs maintenance.
ALWAYS = 1_000_000


def _message(n: int = 0) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=QUEUE, actor_name="hold", args=(), kwargs={"n": n}, options={})


def _stored(client: redis.Redis, queue: str) -> list[str]:
    """Message ids of the messages Dramatiq stores for ``queue``, decoded from its hash."""
    return [_decode(raw).message_id for raw in client.hvals(keys.dramatiq_messages(queue))]


def _decode(raw: bytes | str) -> dramatiq.Message[Any]:
    assert isinstance(raw, bytes)
    return dramatiq.Message.decode(raw)


def _ack_sets(client: redis.Redis, pattern: str) -> dict[str, set[Any]]:
    """The sets of fetched, unacknowledged message ids whose keys match ``pattern``, by key."""
    return {key.decode(): client.smembers(key) for key in client.scan_iter(match=pattern)}


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def broker(settings: Settings) -> Iterator[dramatiq.Broker]:
    broker = build_broker(settings, settings.require_redis_url())
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


def test_a_queued_message_sits_in_the_ready_list_and_is_stored(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    sent = broker.enqueue(_message())

    ready, delayed = keys.dramatiq_queues(QUEUE)
    assert redis_client.llen(ready) == 1 and redis_client.llen(delayed) == 0
    assert _stored(redis_client, QUEUE) == [sent.message_id]
    assert not _ack_sets(redis_client, f"{keys.DRAMATIQ_NAMESPACE}:__acks__.*")


def test_a_delayed_message_sits_in_the_delay_list_and_is_stored_under_the_delay_queue(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    sent = broker.enqueue(_message(), delay=60_000)

    ready, delayed = keys.dramatiq_queues(QUEUE)
    assert delayed == keys.dramatiq_queues(dq_name(QUEUE))[0]  # the delay queue is a queue of its own name
    assert redis_client.llen(ready) == 0 and redis_client.llen(delayed) == 1
    assert _stored(redis_client, dq_name(QUEUE)) == [sent.message_id]
    assert _stored(redis_client, QUEUE) == []


def test_a_message_a_worker_runs_sits_in_its_ack_set_until_done(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    # Given an actor that holds its message until released
    running, release = threading.Event(), threading.Event()

    def hold(n: int) -> None:
        running.set()
        assert release.wait(10)

    dramatiq.actor(actor_name="hold", queue_name=QUEUE, broker=broker)(hold)
    sent = broker.enqueue(_message())
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        # When the worker has fetched it and runs it
        assert running.wait(10)

        # Then it is in exactly one set matching the ready pattern, not in the lists, still stored
        ready_acks = _ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[0])
        assert [len(ids) for ids in ready_acks.values()] == [1]
        assert not _ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[1])
        assert all(redis_client.llen(name) == 0 for name in keys.dramatiq_queues(QUEUE))
        assert _stored(redis_client, QUEUE) == [sent.message_id]

        # And once it is done nothing is left
        release.set()
        _wait_for(lambda: not redis_client.hlen(keys.dramatiq_messages(QUEUE)))
        _wait_for(lambda: not any(_ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[0]).values()))
    finally:
        release.set()
        worker.stop()


def test_a_fetched_delayed_message_sits_in_a_set_of_the_delay_pattern_only(
    broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    broker.enqueue(_message(), delay=1)
    consumer = broker.consume(dq_name(QUEUE), prefetch=1, timeout=100)
    try:
        _wait_for(lambda: next(consumer) is not None)

        ready_pattern, delay_pattern = keys.dramatiq_acks(QUEUE)
        assert [len(ids) for ids in _ack_sets(redis_client, delay_pattern).values()] == [1]
        assert not _ack_sets(redis_client, ready_pattern)  # the two patterns never match the same set
        assert redis_client.llen(keys.dramatiq_queues(QUEUE)[1]) == 0
    finally:
        consumer.close()


def test_a_retry_keeps_the_message_id_and_waits_in_the_delay_queue(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given an actor that fails, on a broker whose retry back-off is long
    slow = settings.model_copy(update={"min_backoff_ms": 60_000, "max_backoff_ms": 60_000, "max_retries": 3})
    broker = build_broker(slow, settings.require_redis_url())
    failed = threading.Event()

    def hold(n: int) -> None:
        failed.set()
        raise RuntimeError("try again")

    dramatiq.actor(actor_name="hold", queue_name=QUEUE, broker=broker)(hold)
    sent = broker.enqueue(_message())
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        # When it failed once
        assert failed.wait(10)

        # Then the same message id waits out the back-off: in the delay list, or held by the worker
        def waiting() -> int:
            held = _ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[1]).values()
            return int(redis_client.llen(keys.dramatiq_queues(QUEUE)[1])) + sum(len(ids) for ids in held)

        _wait_for(lambda: waiting() == 1)
        assert _stored(redis_client, dq_name(QUEUE)) == [sent.message_id]
        retried = _decode(redis_client.hvals(keys.dramatiq_messages(dq_name(QUEUE)))[0])
        assert retried.options["retries"] == 1  # read by WorkOutcomes as the attempts made
        assert redis_client.llen(keys.dramatiq_queues(QUEUE)[0]) == 0
    finally:
        worker.stop()
        broker.close()


def test_a_dead_workers_message_is_delivered_again_with_the_same_message_id(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a message fetched by one worker that then stops beating
    def redis_broker(heartbeat_timeout_ms: int) -> RedisBroker:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=redis.Redis.from_url(redis_url),
            namespace=keys.DRAMATIQ_NAMESPACE,
            heartbeat_timeout=heartbeat_timeout_ms,
            maintenance_chance=ALWAYS,
        )
        broker.declare_queue(QUEUE)
        return broker

    dead, alive = redis_broker(60_000), redis_broker(200)
    sent = dead.enqueue(_message())
    dead_consumer = dead.consume(QUEUE, prefetch=1, timeout=100)
    try:
        first = next(dead_consumer)
        assert first is not None and first.message_id == sent.message_id
        assert _ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[0])

        # When another worker fetches after the heartbeat timeout
        time.sleep(0.4)
        consumer = alive.consume(QUEUE, prefetch=1, timeout=100)
        try:
            again = next(consumer)

            # Then it gets the same message, and the dead worker's set is gone
            assert again is not None and again.message_id == sent.message_id
            held = _ack_sets(redis_client, keys.dramatiq_acks(QUEUE)[0])
            assert [len(ids) for ids in held.values()] == [1]
        finally:
            consumer.close()
    finally:
        dead_consumer.close()
        dead.close()
        alive.close()
