"""The fair priority work queue against a real Redis: ordering, fairness, claims, removal, tokens."""

from __future__ import annotations

import time

import redis

from shared import keys
from shared.clock import now_ms
from shared.config import Settings
from shared.messaging import dispatch, tasks
from shared.messaging.workqueue import AsyncWorkQueue, Entry, Priority, WorkQueue
from shared.runtime.broker import build_broker


def _entry(entry_id: str, tenant: str = "a", priority: Priority = Priority.NORMAL, at: int | None = None) -> Entry:
    return Entry(entry_id, tenant, priority, {"op": "embed_batch", "n": entry_id}, now_ms() if at is None else at)


def _claim_all(queue: WorkQueue, n: int) -> list[str]:
    out = []
    for i in range(n):
        entry = queue.claim(f"m{i}")
        assert entry is not None
        out.append(entry.id)
    return out


def test_the_highest_priority_waiting_anywhere_is_claimed_first(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed", starve_every=0)
    for i in range(200):
        queue.push(_entry(f"bulk{i}", priority=Priority.BULK))
    queue.push(_entry("low", priority=Priority.LOW))
    queue.push(_entry("high", priority=Priority.HIGH))
    queue.push(_entry("critical", priority=Priority.CRITICAL))

    assert _claim_all(queue, 4) == ["critical", "high", "low", "bulk0"]


def test_tenants_take_turns_within_a_level(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed", starve_every=0)
    for i in range(100):
        queue.push(_entry(f"a{i}", tenant="a"))
    queue.push(_entry("b0", tenant="b"))
    queue.push(_entry("c0", tenant="c"))

    assert _claim_all(queue, 5) == ["a0", "b0", "c0", "a1", "a2"]


def test_a_starving_lower_level_gets_every_nth_claim_but_never_displaces_critical(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed", starve_every=3, starve_after_ms=1_000)
    old = now_ms() - 5_000
    for i in range(10):
        queue.push(_entry(f"n{i}"))
    queue.push(_entry("bulk-old", priority=Priority.BULK, at=old))
    queue.push(_entry("low-new", priority=Priority.LOW))

    # Every third claim goes to the lower level that waited longest beyond the threshold.
    assert _claim_all(queue, 4) == ["n0", "n1", "bulk-old", "n2"]

    queue.push(_entry("crit", priority=Priority.CRITICAL))
    queue.push(_entry("bulk-old2", priority=Priority.BULK, at=old))
    first = queue.claim("x0")  # starving bulk work waits, yet critical work goes first
    assert first is not None and first.id == "crit"


def test_a_redelivered_token_resumes_the_entry_it_claimed(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed")
    queue.push(_entry("e1"))
    queue.push(_entry("e2"))

    first = queue.claim("msg-1")
    again = queue.claim("msg-1")  # the same message, delivered again after a crash or a retry
    other = queue.claim("msg-2")

    assert first is not None and again is not None and other is not None
    assert first.id == again.id == "e1" and other.id == "e2"
    assert queue.in_flight() == 2
    assert queue.release("msg-1") and not queue.release("msg-1")
    assert queue.claim("msg-1") is None  # nothing left to claim: a spare token
    assert queue.in_flight() == 1


def test_pushing_an_entry_twice_queues_it_once(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed")
    assert queue.push(_entry("e1"))
    assert not queue.push(_entry("e1"))
    assert queue.waiting() == 1


def test_only_waiting_entries_can_be_removed(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed")
    queue.push(_entry("waiting"))
    queue.push(_entry("running", tenant="b"))
    queue.push(_entry("next"))
    assert queue.claim("m") is not None  # claims "waiting" (tenant a first)

    assert queue.remove("waiting") == -1  # in flight: its worker has to notice
    assert queue.remove("next") == 1
    assert queue.remove("next") == 0
    entry = queue.claim("m2")
    assert entry is not None and entry.id == "running"
    assert queue.claim("m3") is None


async def test_depth_reports_each_priority_the_oldest_wait_and_throughput(
    redis_url: str, redis_client: redis.Redis
) -> None:
    import redis.asyncio as aioredis

    queue = WorkQueue(redis_client, "embed")
    queue.push(_entry("b1", priority=Priority.BULK, at=now_ms() - 3_000))
    queue.push(_entry("b2", priority=Priority.BULK))
    queue.push(_entry("c1", priority=Priority.CRITICAL))
    assert queue.claim("m1") is not None and queue.release("m1")
    assert queue.claim("m2") is not None

    client = aioredis.Redis.from_url(redis_url)
    try:
        depth = await AsyncWorkQueue(client, "embed").depth()
    finally:
        await client.aclose()
    assert depth.by_priority == {"critical": 0, "high": 0, "normal": 0, "low": 0, "bulk": 1}
    assert depth.in_flight == 1
    assert depth.processed_last_minute == 1
    assert depth.oldest_enqueued_ms is not None and now_ms() - depth.oldest_enqueued_ms < 2_000


def test_top_up_sends_tokens_only_for_entries_that_have_none(settings: Settings, redis_client: redis.Redis) -> None:
    broker = build_broker(settings, settings.require_redis_url())
    try:
        broker.declare_queue(tasks.EMBED_QUEUE)
        queue = WorkQueue(redis_client, tasks.EMBED_QUEUE)
        for i in range(3):
            queue.push(_entry(f"e{i}", at=now_ms() - 60_000))  # each sender died before sending its token
        queue.push(_entry("fresh"))  # its sender may still be about to send one
        dispatch.submit(redis_client, broker, tasks.EMBED_QUEUE, _entry("e3", at=now_ms() - 60_000))

        assert dispatch.top_up(redis_client, broker, tasks.EMBED_QUEUE) == 3
        assert redis_client.llen(keys.dramatiq_queues(tasks.EMBED_QUEUE)[0]) == 4
        assert dispatch.top_up(redis_client, broker, tasks.EMBED_QUEUE) == 0
        assert dispatch.top_up(redis_client, broker, tasks.EMBED_QUEUE, grace_ms=0) == 1
    finally:
        broker.close()


def test_a_claim_its_worker_keeps_renewing_stays_and_one_left_unrenewed_goes_back_to_the_front(
    redis_client: redis.Redis,
) -> None:
    queue = WorkQueue(redis_client, "embed", starve_every=0, lease_ms=300)
    for entry_id in ("first", "second", "third"):
        queue.push(_entry(entry_id, at=now_ms() - 60_000))
    orphan = queue.claim("m-dead")  # its worker dies: nobody renews the lease
    assert orphan is not None and (orphan.id, orphan.attempts) == ("first", 1)
    with queue.holding("m-live") as live:
        assert live is not None and live.id == "second"
        time.sleep(1.0)  # three leases: the keeper renews "second" meanwhile
        assert queue.reap() == ["first"]
        assert redis_client.hgetall(keys.wq_claims("embed")) == {b"m-live": b"second"}
    # Ahead of "third", queued after it; a new token takes it, counting a second attempt.
    again = queue.claim("m-new")
    assert again is not None and (again.id, again.attempts) == ("first", 2)
    assert queue.release("m-live") and queue.release("m-new")
    assert queue.reap() == []
    assert redis_client.zcard(keys.wq_leases("embed")) == 0 and redis_client.hlen(keys.wq_attempts("embed")) == 0


def test_a_claim_lost_while_its_work_ran_is_not_renewed_back_into_existence(redis_client: redis.Redis) -> None:
    queue = WorkQueue(redis_client, "embed", lease_ms=60_000)
    queue.push(_entry("e1"))
    with queue.holding("m1") as entry:
        assert entry is not None
        assert queue.reap("m1") == ["e1"]  # taken back (as after a long Redis outage)
        assert not queue.renew("m1")
        assert redis_client.zscore(keys.wq_leases("embed"), "m1") is None
    assert not queue.release("m1")  # the late finish releases nothing: the entry waits for its next run
    assert queue.waiting() == 1


def test_top_up_does_not_count_tokens_a_dead_worker_holds(settings: Settings, redis_client: redis.Redis) -> None:
    broker = build_broker(settings, settings.require_redis_url())
    try:
        queue = WorkQueue(redis_client, tasks.EMBED_QUEUE)
        queue.push(_entry("e1", at=now_ms() - 60_000))
        # A worker fetched the entry's token and died: the token sits in its acknowledgement set
        # until Dramatiq's maintenance (rare) hands it back.
        redis_client.sadd(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.w-dead.{tasks.EMBED_QUEUE}", "token-1")
        redis_client.zadd(keys.dramatiq_heartbeats(), {"w-dead": now_ms() - 60_000})
        assert dispatch.top_up(redis_client, broker, tasks.EMBED_QUEUE) == 0  # counted as a token that will run
        assert dispatch.top_up(redis_client, broker, tasks.EMBED_QUEUE, dead_after_ms=15_000) == 1
        # A live worker's fetched token does count.
        redis_client.zadd(keys.dramatiq_heartbeats(), {"w-dead": now_ms()})
        assert dispatch.tokens_without_claim(redis_client, tasks.EMBED_QUEUE, dead_after_ms=15_000) == 2
    finally:
        broker.close()
