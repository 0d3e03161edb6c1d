"""Messages sent from an event loop reach a real Dramatiq worker, the way ``broker.enqueue`` sends them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dramatiq
import redis.asyncio as aioredis

from semaflow.redis_server import RedisServer
from shared.broker import AsyncSender, build_broker, queue_lists, queue_messages
from shared.config import Settings
from tests.integration.conftest import server_reads

QUEUE = "sender-test"


class _Enqueues(dramatiq.Middleware):
    """Records the enqueue hooks Dramatiq runs, and marks each message the way tracing does."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.before.append(message.message_id)
        message.options["marked"] = "yes"

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.after.append(message.message_id)


async def test_messages_sent_in_one_turn_share_a_round_trip_and_run_on_a_worker(
    settings: Settings, own_redis_server: RedisServer, own_aio_redis: aioredis.Redis
) -> None:
    # Given a broker with a recording middleware and a worker for one actor, on a Redis of the test's own
    aio_redis = own_aio_redis
    hooks = _Enqueues()
    broker = build_broker(settings, own_redis_server.url, extra=[hooks])
    ran: list[tuple[dict[str, Any], str | None]] = []
    done = threading.Event()

    def record(**kwargs: Any) -> None:
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        ran.append((kwargs, message.options.get("marked") if message is not None else None))
        if len(ran) == 20:
            done.set()

    dramatiq.actor(actor_name="record", queue_name=QUEUE, broker=broker)(record)
    messages: list[dramatiq.Message[Any]] = [
        dramatiq.Message(queue_name=QUEUE, actor_name="record", args=(), kwargs={"n": n}, options={}) for n in range(20)
    ]
    sender = AsyncSender(broker, aio_redis)
    await sender.send(messages[:1])  # Redis knows the script from now on
    before = await server_reads(aio_redis)

    # When 19 more are sent in one call
    await sender.send(messages[1:])

    # Then they went in one write, passed the enqueue hooks, and each ran once with its arguments
    assert await server_reads(aio_redis) - before == 1 + 1  # the messages, then INFO
    assert hooks.before == hooks.after == [m.message_id for m in messages]
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        assert await asyncio.to_thread(done.wait, 30)
        await asyncio.sleep(0.2)  # room for a duplicate to show
    finally:
        worker.stop()
        broker.close()
    assert sorted(kwargs["n"] for kwargs, _ in ran) == list(range(20))
    assert {marked for _, marked in ran} == {"yes"}
    ready, _ = queue_lists(QUEUE)
    assert await aio_redis.llen(ready) == 0 and await aio_redis.hlen(queue_messages(QUEUE)) == 0  # all acknowledged
