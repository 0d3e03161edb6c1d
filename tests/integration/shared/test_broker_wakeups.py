"""Idle workers wait for a send instead of polling Redis, against a real Redis and a real Dramatiq worker: a send
wakes them at once, what no send announced is still found, delayed messages run on time, and a stop is prompt.
Their threads wait for a message, not for a tick."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from shared.config import Settings
from shared.runtime.broker import WakingRedisBroker, build_broker
from shared.runtime.worker import Worker

QUEUE = "wakeups"
# Far longer than any wait below: whatever runs sooner was woken, not found by the fallback poll.
LONG_IDLE_MS = 8_000


@contextmanager
def _worker(settings: Settings, idle_wait_ms: int) -> Iterator[tuple[WakingRedisBroker, list[float]]]:
    """A broker and a started one-thread worker on QUEUE whose actor records when each message ran."""
    broker = build_broker(settings.model_copy(update={"worker_idle_wait_ms": idle_wait_ms}), settings.redis_url or "")
    assert isinstance(broker, WakingRedisBroker)
    ran: list[float] = []
    done = threading.Condition()

    def record() -> None:
        with done:
            ran.append(time.monotonic())
            done.notify_all()

    dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="record", max_retries=0)(record)
    worker = Worker(
        broker, queues={QUEUE}, worker_threads=1, worker_timeout=settings.worker_poll_ms, idle_wait_ms=idle_wait_ms
    )
    worker.start()
    try:
        time.sleep(0.5)  # both consumers (the queue and its delay queue) made their first fetch and wait
        yield broker, ran
    finally:
        worker.stop(timeout=5_000)
        broker.close()


def _wait_for(ran: list[float], n: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while len(ran) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(ran) >= n


def _fetches(client: redis.Redis) -> int:
    """Lua calls so far (each Dramatiq fetch is one)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def test_an_idle_worker_fetches_only_when_a_send_is_announced(settings: Settings, redis_client: redis.Redis) -> None:
    with _worker(settings, LONG_IDLE_MS) as (broker, ran):
        before = _fetches(redis_client)
        time.sleep(2.0)
        # Dramatiq's own consumers poll every worker_poll_ms (20 ms here): ~100 fetches each in 2 s.
        assert _fetches(redis_client) - before <= 2

        sent = time.monotonic()
        broker.actors["record"].send()
        assert _wait_for(ran, 1, 3.0), "the send did not wake the idle worker"
        assert ran[0] - sent < 1.0


def test_a_message_no_send_announced_is_found_by_the_fallback_poll(settings: Settings) -> None:
    with _worker(settings, 300) as (broker, ran):
        # Enqueued as a broker that does not announce (an older version, or Dramatiq's maintenance handing a
        # dead worker's message back) would: only the poll every worker_idle_wait_ms finds it.
        RedisBroker.enqueue(broker, broker.actors["record"].message())
        assert _wait_for(ran, 1, 5.0)


def test_a_delayed_message_runs_on_time_on_an_idle_worker(settings: Settings) -> None:
    with _worker(settings, LONG_IDLE_MS) as (broker, ran):
        sent = time.monotonic()
        broker.actors["record"].send_with_options(delay=500)
        assert _wait_for(ran, 1, 4.0)
        assert 0.5 <= ran[0] - sent < 2.0


def test_a_stopping_worker_does_not_wait_out_its_idle_consumers(settings: Settings) -> None:
    broker = build_broker(settings.model_copy(update={"worker_idle_wait_ms": LONG_IDLE_MS}), settings.redis_url or "")
    dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="noop")(lambda: None)
    worker = Worker(
        broker, queues={QUEUE}, worker_threads=4, worker_timeout=settings.worker_poll_ms, idle_wait_ms=LONG_IDLE_MS
    )
    worker.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        worker.stop(timeout=LONG_IDLE_MS * 2)
        assert time.monotonic() - started < 2.0
        assert not any(thread.is_alive() for thread in worker.workers)
    finally:
        broker.close()


def test_messages_a_stopping_worker_hands_back_wake_another_idle_worker(settings: Settings) -> None:
    slow = settings.model_copy(update={"worker_idle_wait_ms": LONG_IDLE_MS})
    ran: list[str] = []

    def declare(broker: dramatiq.Broker) -> None:
        def work(n: int) -> None:
            ran.append(f"{n}@{id(broker)}")
            time.sleep(1.5)  # the first is still running when its worker is told to stop

        dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="work", max_retries=0)(work)

    first, second = build_broker(slow, slow.redis_url or ""), build_broker(slow, slow.redis_url or "")
    declare(first)
    declare(second)
    leaving = Worker(
        first, queues={QUEUE}, worker_threads=1, worker_timeout=slow.worker_poll_ms, idle_wait_ms=LONG_IDLE_MS
    )
    leaving.start()
    try:
        first.actors["work"].send(1)
        first.actors["work"].send(2)
        time.sleep(0.3)  # the leaving worker runs the first and holds the second, unstarted (its prefetch is 2)
        staying = Worker(
            second, queues={QUEUE}, worker_threads=1, worker_timeout=slow.worker_poll_ms, idle_wait_ms=LONG_IDLE_MS
        )
        staying.start()
        time.sleep(0.3)  # idle now: the queue is empty
        leaving.stop(timeout=5_000)
        handed_back = time.monotonic()
        while len(ran) < 2 and time.monotonic() - handed_back < 5.0:
            time.sleep(0.01)
        staying.stop(timeout=5_000)
        # the second ran on the staying worker well before its fallback poll (8 s)
        assert ran == [f"1@{id(first)}", f"2@{id(second)}"]
        assert time.monotonic() - handed_back < 3.0
    finally:
        first.close()
        second.close()


def test_idle_worker_threads_wait_for_a_message_not_for_a_tick(settings: Settings) -> None:
    broker = build_broker(settings.model_copy(update={"worker_idle_wait_ms": LONG_IDLE_MS}), settings.redis_url or "")
    ran: list[float] = []
    dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="stamp", max_retries=0)(
        lambda: ran.append(time.monotonic())
    )
    threads, tick_ms = 4, 20
    worker = Worker(broker, queues={QUEUE}, worker_threads=threads, worker_timeout=tick_ms, idle_wait_ms=LONG_IDLE_MS)
    empty_handed = 0
    take = worker.work_queue.get

    def counted(block: bool = True, timeout: float | None = None) -> Any:
        nonlocal empty_handed
        try:
            return take(block, timeout)
        except Empty:
            empty_handed += 1
            raise

    worker.work_queue.get = counted  # type: ignore[method-assign]
    worker.start()
    try:
        time.sleep(1.0)
        # Dramatiq's threads come back empty-handed every tick (50 times a second each); these only from
        # the first wait, begun before the longer one was set.
        assert empty_handed <= threads
        sent = time.monotonic()
        broker.actors["stamp"].send()
        assert _wait_for(ran, 1, 4.0)
        assert ran[0] - sent < 1.0  # a message wakes a waiting thread at once
    finally:
        worker.stop(timeout=5_000)
        broker.close()
