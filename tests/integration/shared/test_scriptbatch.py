"""Script calls made in one turn of the event loop share a pipeline, against a real Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.scriptbatch import ScriptBatcher
from tests.integration.conftest import closed_port, server_reads

_ECHO = "redis.call('INCR', KEYS[1]) return {KEYS[1], ARGV[1]}"
_FAIL_ON_BAD = "if ARGV[1] == 'bad' then return redis.error_reply('refused ' .. KEYS[1]) end return ARGV[1]"


async def test_concurrent_calls_share_one_round_trip_and_each_gets_its_own_reply(
    own_aio_redis: aioredis.Redis,
) -> None:
    aio_redis = own_aio_redis
    script = aio_redis.register_script(_ECHO)
    await script(keys=["warm"], args=["x"])  # Redis knows the script from now on
    batcher = ScriptBatcher(aio_redis)
    before = await server_reads(aio_redis)

    replies = await asyncio.gather(*(batcher.call(script, [f"k{i}"], [f"v{i}"]) for i in range(50)))

    assert replies == [[f"k{i}".encode(), f"v{i}".encode()] for i in range(50)]
    assert await server_reads(aio_redis) - before == 1 + 1  # the 50 calls, then INFO
    assert await aio_redis.mget([f"k{i}" for i in range(50)]) == [b"1"] * 50


async def test_a_batch_is_split_at_its_size_limit(own_aio_redis: aioredis.Redis) -> None:
    aio_redis = own_aio_redis
    script = aio_redis.register_script(_ECHO)
    await script(keys=["warm"], args=["x"])
    batcher = ScriptBatcher(aio_redis, max_batch=10)
    await asyncio.gather(*(batcher.call(script, [f"k{i}"], [i]) for i in range(25)))  # opens the connections
    before = await server_reads(aio_redis)

    await asyncio.gather(*(batcher.call(script, [f"k{i}"], [i]) for i in range(25)))

    assert await server_reads(aio_redis) - before == 3 + 1


async def test_one_failing_call_does_not_fail_the_others(aio_redis: aioredis.Redis) -> None:
    script = aio_redis.register_script(_FAIL_ON_BAD)
    batcher = ScriptBatcher(aio_redis)

    outcomes = await asyncio.gather(
        batcher.call(script, ["a"], ["good"]),
        batcher.call(script, ["b"], ["bad"]),
        batcher.call(script, ["c"], ["fine"]),
        return_exceptions=True,
    )

    assert outcomes[0] == b"good" and outcomes[2] == b"fine"
    assert isinstance(outcomes[1], ResponseError) and "refused b" in str(outcomes[1])


async def test_scripts_are_loaded_again_after_redis_forgot_them(aio_redis: aioredis.Redis) -> None:
    script = aio_redis.register_script(_ECHO)
    await script(keys=["warm"], args=["x"])
    await aio_redis.script_flush()
    batcher = ScriptBatcher(aio_redis)

    replies = await asyncio.gather(batcher.call(script, ["k1"], ["one"]), batcher.call(script, ["k2"], ["two"]))

    assert list(replies) == [[b"k1", b"one"], [b"k2", b"two"]]


async def test_an_unreachable_redis_fails_every_call_of_the_batch() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    script = client.register_script(_ECHO)
    batcher = ScriptBatcher(client)
    try:
        outcomes = await asyncio.gather(
            batcher.call(script, ["a"], [1]), batcher.call(script, ["b"], [2]), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
