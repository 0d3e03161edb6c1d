"""Acknowledgements sent in the background by :class:`BackgroundAckBroker`, against a real Redis and worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dramatiq
import redis

from semaflow.redis_server import RedisServer
from shared.broker import BackgroundAckBroker, ack_patterns, build_broker, queue_messages
from shared.config import Settings

QUEUE = "acks-test"


def _unacknowledged(client: redis.Redis) -> tuple[int, int]:
    """Messages still stored for the queue, and ids in any worker's set of fetched-but-unacknowledged ones."""
    pending = sum(int(client.scard(key)) for key in client.scan_iter(match=ack_patterns(QUEUE)[0]))
    return int(client.hlen(queue_messages(QUEUE))), pending


def _broker(settings: Settings, redis_url: str) -> BackgroundAckBroker:
    broker = build_broker(settings, redis_url, background_acks=True)
    assert isinstance(broker, BackgroundAckBroker)
    broker.declare_queue(QUEUE)
    return broker


def _send(broker: dramatiq.Broker, n: int) -> list[dramatiq.Message[Any]]:
    messages: list[dramatiq.Message[Any]] = [
        dramatiq.Message(queue_name=QUEUE, actor_name="count", args=(), kwargs={"n": i}, options={}) for i in range(n)
    ]
    for message in messages:
        broker.enqueue(message)
    return messages


def _fetch(broker: dramatiq.Broker, n: int) -> list[dramatiq.MessageProxy]:
    consumer = broker.consume(QUEUE, prefetch=n, timeout=100)
    fetched: list[dramatiq.MessageProxy] = []
    deadline = time.monotonic() + 10
    while len(fetched) < n and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            fetched.append(message)
    assert len(fetched) == n
    return fetched


def test_every_message_a_worker_ran_is_acknowledged_once_the_broker_closes(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a worker on a broker that acknowledges in the background
    broker = _broker(settings, settings.require_redis_url())
    ran: Counter[int] = Counter()
    done = threading.Event()

    def count(n: int) -> None:
        ran[n] += 1
        if len(ran) == 300:
            done.set()

    dramatiq.actor(actor_name="count", queue_name=QUEUE, broker=broker)(count)
    _send(broker, 300)
    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)

    # When it runs all 300 and stops at once
    worker.start()
    try:
        assert done.wait(30)
    finally:
        worker.stop()
        broker.close()

    # Then each ran once, and nothing is left stored or waiting for an acknowledgement
    assert set(ran) == set(range(300)) and set(ran.values()) == {1}
    assert _unacknowledged(redis_client) == (0, 0)


def test_acknowledgements_are_sent_after_redis_forgot_the_script(settings: Settings, redis_client: redis.Redis) -> None:
    broker = _broker(settings, settings.require_redis_url())
    _send(broker, 5)
    fetched = _fetch(broker, 5)
    assert _unacknowledged(redis_client) == (5, 5)
    redis_client.script_flush()

    for message in fetched:
        broker.do_ack(QUEUE, message.options["redis_message_id"])
    broker.close()

    assert _unacknowledged(redis_client) == (0, 0)


def test_acknowledgements_wait_for_redis_to_come_back(settings: Settings, tmp_path: Path) -> None:
    # Given five fetched messages on a Redis of our own, which then stops
    server = RedisServer.start(tmp_path / "redis")
    own = settings.model_copy(update={"redis_url": server.url})
    broker = _broker(own, server.url)
    _send(broker, 5)
    fetched = _fetch(broker, 5)
    port = server.port
    server.stop()

    try:
        # When they are acknowledged while it is down, and it starts again a moment later
        for message in fetched:
            broker.do_ack(QUEUE, message.options["redis_message_id"])
        time.sleep(1.5)  # at least one failed round trip
        server = RedisServer.start(tmp_path / "redis", port=port)
        client = redis.Redis.from_url(server.url)

        # Then the acknowledgements arrive
        deadline = time.monotonic() + 10
        while _unacknowledged(client) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _unacknowledged(client) == (0, 0)
        client.close()
    finally:
        broker.close()
        server.stop()
