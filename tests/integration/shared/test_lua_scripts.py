"""Every Lua script of shared/lua, through the registry, against a real Redis: its header, its load,
the NOSCRIPT fallback on each kind of client, and one plausible run each."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Final

import pytest
import redis
import redis.asyncio as aioredis

from shared import keys, scripts
from shared.messaging.workqueue import LEVELS
from shared.scriptbatch import ScriptBatcher
from shared.scripts import LuaScript
from shared.webhooks.deliveries import _DELIVERY_FIELDS, _TARGET_FIELDS

Case = Callable[[redis.Redis, LuaScript], None]
Arg = str | int | bytes
CASES: dict[str, Case] = {}

_LINE = re.compile(r"-- (KEYS|ARGV)(?:\[(\d+)(\.\.)?\])?: \S")


def case(name: str) -> Callable[[Case], Case]:
    """Register the run of script ``name`` (every script needs one)."""

    def register(run: Case) -> Case:
        CASES[name] = run
        return run

    return register


# --- the registry -------------------------------------------------------------------------------


def test_every_script_has_a_case_and_every_case_a_script() -> None:
    assert len(scripts.names()) >= 26
    assert set(CASES) == set(scripts.names())


def test_a_script_is_named_and_read_at_first_use() -> None:
    missing = scripts.get("no_such_script")  # naming one reads nothing
    assert scripts.get("no_such_script") is missing
    with pytest.raises(FileNotFoundError):
        _ = missing.sha
    script = scripts.get("job_transition")
    raw = resources.files("shared").joinpath("lua", "job_transition.lua").read_bytes()
    assert script.code == raw
    assert script.sha == hashlib.sha1(raw).hexdigest()


@pytest.mark.parametrize("name", scripts.names())
def test_header_names_every_key_and_argument_and_the_reply(name: str) -> None:
    lines = scripts.get(name).source.splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]
    body = "\n".join(lines[len(header) :])
    assert header and not _LINE.match(header[0]), f"{name}: the header opens with what the script does"
    assert sum(line.startswith("-- Returns: ") for line in header) == 1, f"{name}: one '-- Returns: ' line"
    for table in ("KEYS", "ARGV"):
        named = [m for m in map(_LINE.match, header) if m and m.group(1) == table]
        assert named, f"{name}: no '-- {table}...' line ('-- {table}: none' when there are none)"
        if named[0].group(2) is None:  # '-- KEYS: none'
            assert len(named) == 1 and named[0].string.endswith(": none"), name
            assert not re.search(rf"\b{table}\b", body), f"{name}: uses {table} it says it has none of"
            continue
        first = [int(m.group(2)) for m in named]
        assert first == list(range(1, len(first) + 1)), f"{name}: {table} lines out of order: {first}"
        assert all(not m.group(3) for m in named[:-1]), f"{name}: only the last {table} line may be 'N..'"
        rest = named[-1].group(3) is not None
        for used in map(int, re.findall(rf"\b{table}\[(\d+)\]", body)):
            assert used <= len(first) or rest, f"{name}: {table}[{used}] is not in the header"


@pytest.mark.parametrize("name", scripts.names())
def test_loads_through_the_registry(name: str, redis_client: redis.Redis) -> None:
    script = scripts.get(name)
    assert script.load(redis_client) == script.sha
    assert redis_client.script_exists(script.sha) == [True]


@pytest.mark.parametrize("name", scripts.names())
def test_runs(name: str, redis_client: redis.Redis) -> None:
    script = scripts.get(name)
    redis_client.script_flush()  # each runs through the NOSCRIPT fallback first
    assert redis_client.script_exists(script.sha) == [False]
    if name not in CASES:
        pytest.fail(f"{name}.lua has no case in this module: add one with @case({name!r})")
    CASES[name](redis_client, script)


# --- NOSCRIPT on each kind of client ---------------------------------------------------------------

_SEEN = scripts.get("events_first_seen")


def _seen_args(*events: str) -> list[Arg]:
    return [keys.event_seen("g", ""), 60, *events]


def test_a_flushed_script_is_loaded_again_on_a_blocking_client(redis_client: redis.Redis) -> None:
    redis_client.script_flush()
    assert _SEEN.run(redis_client, (), _seen_args("e1", "e2")) == [1, 1]
    assert redis_client.script_exists(_SEEN.sha) == [True]
    assert _SEEN.run(redis_client, (), _seen_args("e2", "e3")) == [0, 1]


def test_a_blocking_pipeline_loads_what_redis_lacks(redis_client: redis.Redis) -> None:
    for transaction in (True, False):
        redis_client.script_flush()
        first, second = f"a-{transaction}", f"b-{transaction}"
        with redis_client.pipeline(transaction=transaction) as pipe:
            _SEEN.run(pipe, (), _seen_args(first))
            _SEEN.run(pipe, (), _seen_args(first, second))
            pipe.get(keys.event_seen("g", first))
            assert pipe.execute() == [[1], [0, 1], b"1"]


async def test_a_flushed_script_is_loaded_again_on_an_asyncio_client(aio_redis: aioredis.Redis) -> None:
    await aio_redis.script_flush()
    assert await _SEEN.arun(aio_redis, (), _seen_args("e1")) == [1]
    assert await aio_redis.script_exists(_SEEN.sha) == [True]
    assert await _SEEN.arun(aio_redis, (), _seen_args("e1", "e2")) == [0, 1]


async def test_an_asyncio_pipeline_loads_what_redis_lacks(aio_redis: aioredis.Redis) -> None:
    await aio_redis.script_flush()
    async with aio_redis.pipeline(transaction=True) as pipe:
        await _SEEN.arun(pipe, (), _seen_args("e1"))
        await _SEEN.arun(pipe, (), _seen_args("e1", "e2"))
        assert await pipe.execute() == [[1], [0, 1]]


async def test_a_batch_runs_a_flushed_script_alone_and_loads_it(aio_redis: aioredis.Redis) -> None:
    bound = _SEEN.bind(aio_redis)
    assert bound.sha == _SEEN.sha
    await aio_redis.script_flush()
    batcher = ScriptBatcher(aio_redis)
    replies = await asyncio.gather(*(batcher.call(bound, (), _seen_args(f"e{i}", "same")) for i in range(5)))
    assert sorted(replies) == [[1, 0]] * 4 + [[1, 1]]
    assert await aio_redis.script_exists(_SEEN.sha) == [True]


# --- one run of each script ------------------------------------------------------------------------


@case("job_transition")
def _job_transition(r: redis.Redis, s: LuaScript) -> None:
    job = keys.job("j1")
    r.hset(job, mapping={"state": "queued", "updated_at": "t0", "retention_s": "600"})
    assert s.run(r, [job], ["running", "queued,running", "", "updated_at", "t1"]) == 1
    assert r.hmget(job, "state", "started_at", "updated_at") == [b"running", b"t1", b"t1"]
    assert 0 < r.ttl(job) <= 600
    assert s.run(r, [job], ["queued", "failed,cancelled,dead", ""]) == -1
    assert s.run(r, [keys.job("nope")], ["running", "queued", ""]) == 0


@case("job_begin")
def _job_begin(r: redis.Redis, s: LuaScript) -> None:
    job = keys.job("j2")
    r.hset(job, mapping={"state": "queued", "updated_at": "t0", "retention_s": "600"})
    assert s.run(r, [job], ["t1", "1"]) == 1
    assert r.hmget(job, "state", "started_at", "updated_at", "attempts") == [b"running", b"t1", b"t1", b"1"]
    assert 0 < r.ttl(job) <= 600
    assert s.run(r, [job], ["t2", "1"]) == 1  # a later stage's first attempt: still 1, started kept
    assert r.hmget(job, "state", "started_at", "updated_at", "attempts") == [b"running", b"t1", b"t2", b"1"]
    assert s.run(r, [job], ["t3", "2"]) == 1  # that stage's work redelivered
    assert r.hget(job, "attempts") == b"2"
    r.hset(job, "attempts_base", "2")  # as a retry of the job leaves it
    assert s.run(r, [job], ["t4", "1"]) == 1
    assert r.hget(job, "attempts") == b"3"
    r.hset(job, "state", "cancelled")
    assert s.run(r, [job], ["t5", "1"]) == -1
    assert r.hmget(job, "state", "attempts") == [b"cancelled", b"3"]
    assert s.run(r, [keys.job("nope")], ["t1", "1"]) == 0


# The work queue's key templates for queue "q" (see shared.messaging.workqueue).
_TEMPLATES: Final = (
    keys.wq_age("q", keys.LEVEL),
    keys.wq_ring("q", keys.LEVEL),
    keys.wq_tenant("q", keys.LEVEL, keys.TENANT),
)


def _entry(tenant: str, level: int) -> str:
    return json.dumps({"tenant": tenant, "priority": "normal", "level": level, "kwargs": {}, "enqueued_ms": 1000})


def _push(r: redis.Redis, entry_id: str, tenant: str = "acme", level: int = 2) -> int:
    args: list[Arg] = [*_TEMPLATES, entry_id, tenant, level, _entry(tenant, level), 1000]
    return int(scripts.get("workqueue_push").run(r, [keys.wq_entries("q")], args))


_WQ_CLAIM_KEYS: Final = (
    keys.wq_entries("q"),
    keys.wq_claims("q"),
    keys.wq_claimed("q"),
    keys.wq_leases("q"),
    keys.wq_attempts("q"),
)


def _claim(r: redis.Redis, message_id: str, now: int = 2000) -> list[bytes] | None:
    found = scripts.get("workqueue_claim").run(
        r, _WQ_CLAIM_KEYS, [*_TEMPLATES, message_id, now, LEVELS, 10, 30_000, 15_000]
    )
    return list(found) if found else None


@case("workqueue_push")
def _workqueue_push(r: redis.Redis, s: LuaScript) -> None:
    args: list[Arg] = [*_TEMPLATES, "e1", "acme", 2, _entry("acme", 2), 1000]
    assert s.run(r, [keys.wq_entries("q")], args) == 1
    assert s.run(r, [keys.wq_entries("q")], args) == 0  # already queued
    assert r.lrange(keys.wq_tenant("q", 2, "acme"), 0, -1) == [b"e1"]
    assert r.lrange(keys.wq_ring("q", 2), 0, -1) == [b"acme"]
    assert r.zscore(keys.wq_age("q", 2), "e1") == 1000


@case("workqueue_claim")
def _workqueue_claim(r: redis.Redis, s: LuaScript) -> None:
    assert s.run(r, _WQ_CLAIM_KEYS, [*_TEMPLATES, "m0", 0, 5, 10, 0, 15_000]) is None
    _push(r, "low", level=4)
    _push(r, "high", level=1)
    args: list[Arg] = [*_TEMPLATES, "m1", 2000, LEVELS, 10, 30_000, 15_000]
    assert s.run(r, _WQ_CLAIM_KEYS, args) == [b"high", _entry("acme", 1).encode(), 1]
    assert r.zscore(keys.wq_leases("q"), "m1") == 17_000
    args[4] = 3000  # the same token, redelivered a second later, resumes its entry: one more attempt
    assert s.run(r, _WQ_CLAIM_KEYS, args) == [b"high", _entry("acme", 1).encode(), 2]
    assert r.hget(keys.wq_claims("q"), "m1") == b"high"
    assert r.zscore(keys.wq_leases("q"), "m1") == 18_000


@case("workqueue_release")
def _workqueue_release(r: redis.Redis, s: LuaScript) -> None:
    _push(r, "e1")
    assert _claim(r, "m1") is not None
    bucket = keys.wq_done("q", 7)
    keys_ = [keys.wq_entries("q"), keys.wq_claims("q"), keys.wq_leases("q"), keys.wq_attempts("q")]
    assert s.run(r, keys_, ["m1", bucket, 120]) == 1
    assert not any(r.exists(k) for k in keys_)
    assert r.get(bucket) == b"1" and 0 < r.ttl(bucket) <= 120
    assert s.run(r, keys_, ["m1", bucket, 120]) == 0


@case("workqueue_remove")
def _workqueue_remove(r: redis.Redis, s: LuaScript) -> None:
    _push(r, "waiting")
    _push(r, "held", tenant="other")
    assert _claim(r, "m1") is not None  # takes one of the two
    held = r.hget(keys.wq_claims("q"), "m1")
    waiting = "held" if held == b"waiting" else "waiting"
    keys_ = [keys.wq_entries("q"), keys.wq_attempts("q")]
    assert s.run(r, keys_, [*_TEMPLATES, waiting]) == 1
    assert s.run(r, keys_, [*_TEMPLATES, keys.text(held or b"")]) == -1
    assert s.run(r, keys_, [*_TEMPLATES, "unknown"]) == 0
    assert r.hkeys(keys.wq_entries("q")) == [held]
    assert r.llen(keys.wq_ring("q", 2)) == 0 and r.zcard(keys.wq_age("q", 2)) == 0


@case("workqueue_reap")
def _workqueue_reap(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.wq_entries("q"), keys.wq_claims("q"), keys.wq_leases("q")]
    for entry_id, tenant in (("lost", "acme"), ("live", "acme"), ("next", "other"), ("later", "acme")):
        _push(r, entry_id, tenant=tenant)
    assert _claim(r, "m-lost", now=2000) is not None  # "lost", leased until 17,000
    assert _claim(r, "m-live", now=9000) is not None  # "next" (tenants take turns), until 24,000
    r.hset(keys.wq_claims("q"), "m-gone", "vanished")  # a claim of an entry released meanwhile
    assert s.run(r, keys_, [*_TEMPLATES, 20_000, ""]) == [b"lost"]
    assert r.hgetall(keys.wq_claims("q")) == {b"m-live": b"next"}
    assert r.zrange(keys.wq_leases("q"), 0, -1) == [b"m-live"]
    # Back at the front of its level, its tenant's turn first, with its original enqueue time.
    assert r.lrange(keys.wq_ring("q", 2), 0, 0) == [b"acme"]
    assert r.lrange(keys.wq_tenant("q", 2, "acme"), 0, -1) == [b"lost", b"live", b"later"]
    assert r.zscore(keys.wq_age("q", 2), "lost") == 1000
    assert _claim(r, "m-other", now=20_000) == [b"lost", _entry("acme", 2).encode(), 2]
    # One token's claim, whatever its lease.
    assert s.run(r, keys_, [*_TEMPLATES, 20_000, "m-live"]) == [b"next"]
    assert s.run(r, keys_, [*_TEMPLATES, 20_000, "m-live"]) == []


@case("schedule_report")
def _schedule_report(r: redis.Redis, s: LuaScript) -> None:
    key = keys.schedule("nightly")
    r.hset(key, mapping={"run_id": "r2", "outcome": "enqueued", "finished_at": "1"})
    assert s.run(r, [key], ["r1", "failed", "old run", "5"]) == 0
    assert s.run(r, [key], ["r2", "running", "", ""]) == 1
    assert r.hmget(key, "outcome", "finished_at") == [b"running", b"1"]
    assert s.run(r, [key], ["r2", "succeeded", "done", "9"]) == 1
    assert r.hmget(key, "outcome", "detail", "finished_at") == [b"succeeded", b"done", b"9"]


@case("webhook_create")
def _webhook_create(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.webhook("ep1"), keys.tenant_webhooks("acme"), keys.EVENTS_STREAM]
    assert s.run(r, keys_, [1000, "ep1", "url", "https://example.test/hook"]) == b"0-0"
    last = r.xadd(keys.EVENTS_STREAM, {"e": "1"})
    keys_ = [keys.webhook("ep2"), keys.tenant_webhooks("acme"), keys.EVENTS_STREAM]
    assert s.run(r, keys_, [2000, "ep2", "url", "https://example.test/hook", "tenant", "acme"]) == last
    assert r.hgetall(keys.webhook("ep2")) == {
        b"after_entry": last,
        b"url": b"https://example.test/hook",
        b"tenant": b"acme",
    }
    assert r.zrange(keys.tenant_webhooks("acme"), 0, -1, withscores=True) == [(b"ep1", 1000.0), (b"ep2", 2000.0)]


_KEY_TEMPLATES = [
    key("{}") for key in (keys.webhook_message, keys.tenant_messages, keys.delivery, keys.webhook_due, keys.webhook_log)
]


@case("delivery_create")
def _delivery_create(r: redis.Redis, s: LuaScript) -> None:
    now, ttl = 10_000_000, 3600
    r.zadd(keys.tenant_messages("acme"), {"expired": 1})
    args: list[Arg] = [now, ttl, 1, *_KEY_TEMPLATES, "ev1", "acme", now - 5, b'{"id":"ev1"}']
    r.zadd(keys.webhook_log("ep2"), {"old": 1})
    args += ["acme", "ev1", "job.succeeded", "event", "00-trace", 1, "d1", "ep1"]
    args += ["acme", "ev1", "job.succeeded", "event", "", 2, "d2", "ep2", "d3", "ep3"]
    assert s.run(r, [keys.WEBHOOK_SCHEDULE], args) == 3
    assert s.run(r, [keys.WEBHOOK_SCHEDULE], args) == 0  # each delivery exists once
    assert r.get(keys.webhook_message("ev1")) == b'{"id":"ev1"}'
    assert r.zrange(keys.tenant_messages("acme"), 0, -1) == [b"ev1"]  # what is past the TTL dropped
    assert r.hmget(keys.delivery("d1"), "state", "endpoint_id", "traceparent") == [b"pending", b"ep1", b"00-trace"]
    assert 0 < r.ttl(keys.delivery("d1")) <= ttl
    assert r.zscore(keys.webhook_due("ep2"), "d2") == now
    assert r.zscore(keys.webhook_log("ep1"), "d1") == now
    assert r.hmget(keys.delivery("d3"), "event_id", "event_type", "endpoint_id") == [b"ev1", b"job.succeeded", b"ep3"]
    assert r.zrange(keys.webhook_log("ep2"), 0, -1) == [b"d2"]  # what is past the TTL dropped
    assert r.zrange(keys.WEBHOOK_SCHEDULE, 0, -1) == [b"ep1", b"ep2", b"ep3"]


_CLAIM_KEYS = [keys.webhook("ep1"), keys.webhook_due("ep1"), keys.webhook_in_flight("ep1"), keys.WEBHOOK_SCHEDULE]


@case("delivery_claim")
def _delivery_claim(r: redis.Redis, s: LuaScript) -> None:
    r.hset(keys.webhook("ep1"), "url", "https://example.test/hook")
    for d in ("d1", "d2", "d3"):
        r.hset(keys.delivery(d), mapping={"id": d, "state": "pending"})
    r.zadd(keys.webhook_due("ep1"), {"d1": 900, "d2": 950, "d3": 5000})
    args: list[Arg] = ["ep1", 1000, 1, 30_000, 10, "L:", keys.delivery(""), 1]
    assert s.run(r, _CLAIM_KEYS, args) == [b"d1", b"L:1"]  # one slot
    assert r.hmget(keys.delivery("d1"), "state", "lease") == [b"delivering", b"L:1"]
    assert r.zrange(keys.webhook_in_flight("ep1"), 0, -1, withscores=True) == [(b"d1", 31_000.0)]
    assert r.zscore(keys.WEBHOOK_SCHEDULE, "ep1") == 31_000  # d2 waits for the slot: the lease's end next
    assert s.run(r, _CLAIM_KEYS, args) == []


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


@case("delivery_begin")
def _delivery_begin(r: redis.Redis, s: LuaScript) -> None:
    delivery = {name: f"{name}-value" for name in _DELIVERY_FIELDS} | {"endpoint_id": "ep1", "event_id": "ev1"}
    target = {name: f"{name}-value" for name in _TARGET_FIELDS}
    r.hset(keys.delivery("d1"), items=[*_flat(delivery), "lease", "L1"])
    r.hset(keys.webhook("ep1"), items=_flat(target))
    r.set(keys.webhook_message("ev1"), b"body")
    args: list[Arg] = ["L1", keys.webhook(""), keys.webhook_message("")]
    found, endpoint, body = s.run(r, [keys.delivery("d1")], args)
    assert dict(zip(_DELIVERY_FIELDS, found, strict=True)) == {k: v.encode() for k, v in delivery.items()}
    assert dict(zip(_TARGET_FIELDS, endpoint, strict=True)) == {k: v.encode() for k, v in target.items()}
    assert body == b"body"
    assert s.run(r, [keys.delivery("d1")], args) is None  # begun once
    assert s.run(r, [keys.delivery("d1")], ["stale", *args[1:]]) is None


def _finish_keys(delivery: str, endpoint: str) -> list[str]:
    return [
        keys.delivery(delivery),
        keys.delivery_attempts(delivery),
        keys.webhook(endpoint),
        keys.webhook_due(endpoint),
        keys.webhook_in_flight(endpoint),
        keys.WEBHOOK_SCHEDULE,
        keys.wq_done("notify", 1),
    ]


@case("delivery_finish")
def _delivery_finish(r: redis.Redis, s: LuaScript) -> None:
    r.hset(keys.delivery("d1"), mapping={"id": "d1", "state": "delivering", "lease": "L1", "attempts": 0})
    r.hset(keys.webhook("ep1"), "url", "https://example.test/hook")
    r.zadd(keys.webhook_in_flight("ep1"), {"d1": 31_000})
    args: list[Arg] = ["L1", 1000, "retry", 5000, '{"n":1}', 503, "", 3600, 60_000, "", "failing too long", "ep1", 100]
    assert s.run(r, _finish_keys("d1", "ep1"), args) == [1, 0, b""]
    assert r.hmget(keys.delivery("d1"), "state", "next_ms", "attempts", "lease") == [b"pending", b"5000", b"1", b""]
    assert r.zscore(keys.webhook_due("ep1"), "d1") == 5000 and r.zcard(keys.webhook_in_flight("ep1")) == 0
    assert r.lrange(keys.delivery_attempts("d1"), 0, -1) == [b'{"n":1}']
    assert r.hget(keys.webhook("ep1"), "failing_since_ms") == b"1000"
    assert s.run(r, _finish_keys("d1", "ep1"), args) == [0]  # the lease was spent
    r.hset(keys.delivery("d1"), "lease", "L2")
    args = ["L2", 2000, "failed", 0, '{"n":2}', 410, "", 3600, 60_000, "gone (410)", "", "ep1", 100]
    assert s.run(r, _finish_keys("d1", "ep1"), args) == [1, 1, b"gone (410)"]
    assert r.hmget(keys.webhook("ep1"), "disabled", "disabled_reason") == [b"1", b"gone (410)"]
    assert r.get(keys.wq_done("notify", 1)) == b"2"


@case("delivery_release")
def _delivery_release(r: redis.Redis, s: LuaScript) -> None:
    r.hset(keys.delivery("d1"), mapping={"id": "d1", "state": "delivering", "lease": "L1", "begun": "L1"})
    r.zadd(keys.webhook_in_flight("ep1"), {"d1": 31_000})
    keys_ = [keys.delivery("d1"), keys.webhook_due("ep1"), keys.webhook_in_flight("ep1"), keys.WEBHOOK_SCHEDULE]
    assert s.run(r, keys_, ["stale", 1000, "ep1"]) == 0
    assert s.run(r, keys_, ["L1", 1000, "ep1"]) == 1
    assert r.hgetall(keys.delivery("d1")) == {
        b"id": b"d1",
        b"state": b"pending",
        b"lease": b"",
        b"next_ms": b"1000",
    }
    assert r.zscore(keys.webhook_due("ep1"), "d1") == 1000 and r.zcard(keys.webhook_in_flight("ep1")) == 0
    assert r.zscore(keys.WEBHOOK_SCHEDULE, "ep1") == 1000


@case("delivery_requeue")
def _delivery_requeue(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.delivery("d1"), keys.webhook_due("ep1"), keys.WEBHOOK_SCHEDULE]
    assert s.run(r, keys_, [1000, "ep1", 3600]) == 0
    r.hset(keys.delivery("d1"), mapping={"id": "d1", "state": "delivering"})
    assert s.run(r, keys_, [1000, "ep1", 3600]) == -1
    r.hset(keys.delivery("d1"), mapping={"state": "exhausted", "attempts": 5, "dead_letter": "dl1"})
    assert s.run(r, keys_, [1000, "ep1", 3600]) == 1
    assert r.hmget(keys.delivery("d1"), "state", "round_start", "dead_letter") == [b"pending", b"5", None]
    assert r.zscore(keys.webhook_due("ep1"), "d1") == 1000 and r.zscore(keys.WEBHOOK_SCHEDULE, "ep1") == 1000
    assert 0 < r.ttl(keys.delivery("d1")) <= 3600


@case("ratelimit_charge")
def _ratelimit_charge(r: redis.Redis, s: LuaScript) -> None:
    overrides = keys.rate_limit_overrides("acme")
    r.hset(overrides, "per_day", 1)
    keys_ = [overrides, keys.rate_limit_counter("k1", "minute"), keys.rate_limit_counter("k1", "day")]
    args: list[Arg] = ["per_minute", 5, 60, "per_day", 100, 86_400]
    first = s.run(r, keys_, args)
    assert first[:3] == [1, 5, 4] and first[4:6] == [1, 0]  # the tenant's own daily quota: 1
    assert 0 < first[3] <= 60 and 0 < first[6] <= 86_400
    refused = s.run(r, keys_, args)
    assert refused[0] == 0 and refused[1:3] == [5, 4]  # nothing counted when one window refuses


@case("idempotency_claim")
def _idempotency_claim(r: redis.Redis, s: LuaScript) -> None:
    key = keys.idempotency("acme", "k")
    assert s.run(r, [key], ["fp", "token", 30]) is None
    assert s.run(r, [key], ["fp2", "token2", 30]) == [b"fp", None, None, None]
    assert r.hget(key, "token") == b"token" and 0 < r.ttl(key) <= 30


@case("idempotency_complete")
def _idempotency_complete(r: redis.Redis, s: LuaScript) -> None:
    key = keys.idempotency("acme", "k")
    r.hset(key, mapping={"fingerprint": "fp", "token": "token"})
    assert s.run(r, [key], ["other", 60, 201, "{}", b"body"]) == 0
    assert s.run(r, [key], ["token", 60, 201, '{"Location":"/x"}', b"body"]) == 1
    assert r.hgetall(key) == {
        b"fingerprint": b"fp",
        b"status": b"201",
        b"headers": b'{"Location":"/x"}',
        b"body": b"body",
    }
    assert 0 < r.ttl(key) <= 60


@case("idempotency_release")
def _idempotency_release(r: redis.Redis, s: LuaScript) -> None:
    key = keys.idempotency("acme", "k")
    r.hset(key, mapping={"fingerprint": "fp", "token": "token"})
    assert s.run(r, [key], ["other"]) == 0
    assert s.run(r, [key], ["token"]) == 1
    assert not r.exists(key)


@case("idempotency_renew")
def _idempotency_renew(r: redis.Redis, s: LuaScript) -> None:
    key = keys.idempotency("acme", "k")
    r.hset(key, mapping={"fingerprint": "fp", "token": "token"})
    r.expire(key, 5)
    assert s.run(r, [key], ["other", 60]) == 0
    assert 0 < r.ttl(key) <= 5
    assert s.run(r, [key], ["token", 60]) == 1
    assert 5 < r.ttl(key) <= 60
    r.hdel(key, "token")  # its answer was stored: the claim is over
    assert s.run(r, [key], ["token", 60]) == 0


@case("index_advance")
def _index_advance(r: redis.Redis, s: LuaScript) -> None:
    latest, docmap, job = keys.latest("acme", "c"), keys.docmap("acme", "c"), keys.job("j1")
    r.hset(job, "state", "running")
    assert s.run(r, [latest, docmap, job], ["", "v1", "doc1", "s1:1", "doc2", "s1:2"]) == 1
    assert r.get(latest) == b"v1" and r.hget(job, "published") == b"v1"
    assert r.hgetall(docmap) == {b"doc1": b"s1:1", b"doc2": b"s1:2"}
    assert s.run(r, [latest, docmap, keys.job("-")], ["", "v2"]) == 0  # LATEST moved
    r.hset(job, "state", "cancelled")
    assert s.run(r, [latest, docmap, job], ["v1", "v2", "doc1", "-:3"]) == -1
    assert s.run(r, [latest, docmap, keys.job("-")], ["v1", "v2", "doc1", "-:3"]) == 1
    assert not r.exists(keys.job("-"))


@case("index_replace")
def _index_replace(r: redis.Redis, s: LuaScript) -> None:
    latest, docmap, job = keys.latest("acme", "c"), keys.docmap("acme", "c"), keys.job("j1")
    floor, staged, moves = keys.write_floor("acme", "c"), keys.docmap_next("acme", "c"), keys.segment_moves("acme", "c")
    r.set(latest, "v3")
    r.hset(docmap, mapping={"doc1": "s3:9", "doc9": "s3:8"})
    r.hset(moves, "s2", "s3")
    r.hset(staged, mapping={"doc1": "s1:1"})
    keys_ = [latest, docmap, job, floor, staged, moves]
    assert s.run(r, keys_, ["v1", "v4", "10"]) == 0
    assert s.run(r, keys_, ["v3", "v4", "10"]) == 1
    assert r.get(latest) == b"v4" and r.get(floor) == b"10"
    assert r.hgetall(docmap) == {b"doc1": b"s1:1"} and not r.exists(staged) and not r.exists(moves)
    # Nothing staged: the map is emptied.
    assert s.run(r, keys_, ["v4", "v5", "11"]) == 1
    assert not r.exists(docmap)


@case("index_compact")
def _index_compact(r: redis.Redis, s: LuaScript) -> None:
    latest, moves = keys.latest("acme", "c"), keys.segment_moves("acme", "c")
    r.set(latest, "v1")
    assert s.run(r, [latest, moves], ["v0", "v2", "m1", "s1", "s2"]) == 0  # LATEST moved
    assert not r.exists(moves)
    assert s.run(r, [latest, moves], ["v1", "v2", "m1", "s1", "s2"]) == 1
    assert r.get(latest) == b"v2" and r.hgetall(moves) == {b"s1": b"m1", b"s2": b"m1"}


_LEASE_VALUE = "host:1:abc 7"


def _record_args(mode: str, tick: int, run: str) -> list[Arg]:
    return [_LEASE_VALUE, mode, tick, tick, run, tick + 5, 7, "0"]


@case("scheduler_record")
def _scheduler_record(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.scheduler_lease(), keys.schedule("nightly")]
    assert s.run(r, keys_, _record_args("fire", 1000, "tick-1")) == -1  # no lease
    r.set(keys.scheduler_lease(), _LEASE_VALUE)
    assert s.run(r, keys_, _record_args("fire", 1000, "tick-1")) == 1
    assert r.hmget(keys.schedule("nightly"), "run_id", "cursor", "outcome") == [b"tick-1", b"1000", b"enqueued"]
    assert s.run(r, keys_, _record_args("fire", 1000, "tick-1")) == 0  # handled already
    assert s.run(r, keys_, _record_args("advance", 2000, "")) == 2
    assert r.hget(keys.schedule("nightly"), "cursor") == b"2000"
    assert s.run(r, keys_, _record_args("manual", 1500, "manual-1")) == 1
    assert r.hmget(keys.schedule("nightly"), "run_id", "manual", "cursor") == [b"manual-1", b"1", b"2000"]


@case("scheduler_cursors")
def _scheduler_cursors(r: redis.Redis, s: LuaScript) -> None:
    r.hset(keys.schedule("a"), "cursor", 5)
    assert s.run(r, [keys.schedule("a"), keys.schedule("b")]) == [b"5", None]


@case("scheduler_take_trigger")
def _scheduler_take_trigger(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.scheduler_lease(), keys.schedule_triggers()]
    r.rpush(keys.schedule_triggers(), "nightly 100")
    assert s.run(r, keys_, [_LEASE_VALUE]) == -1
    r.set(keys.scheduler_lease(), _LEASE_VALUE)
    assert s.run(r, keys_, [_LEASE_VALUE]) == b"nightly 100"
    assert s.run(r, keys_, [_LEASE_VALUE]) is None


@case("scheduler_lease_acquire")
def _scheduler_lease_acquire(r: redis.Redis, s: LuaScript) -> None:
    keys_ = [keys.scheduler_lease(), keys.scheduler_fence()]
    r.set(keys.scheduler_fence(), 6)
    assert s.run(r, keys_, ["host:1:abc", 10_000]) == 7
    assert r.get(keys.scheduler_lease()) == _LEASE_VALUE.encode() and 0 < r.pttl(keys.scheduler_lease()) <= 10_000
    assert s.run(r, keys_, ["host:2:def", 10_000]) == 0


@case("scheduler_lease_renew")
def _scheduler_lease_renew(r: redis.Redis, s: LuaScript) -> None:
    r.set(keys.scheduler_lease(), _LEASE_VALUE, px=1000)
    assert s.run(r, [keys.scheduler_lease()], ["host:2:def 8", 60_000]) == 0
    assert s.run(r, [keys.scheduler_lease()], [_LEASE_VALUE, 60_000]) == 1
    assert r.pttl(keys.scheduler_lease()) > 1000


@case("scheduler_lease_release")
def _scheduler_lease_release(r: redis.Redis, s: LuaScript) -> None:
    r.set(keys.scheduler_lease(), _LEASE_VALUE)
    assert s.run(r, [keys.scheduler_lease()], ["host:2:def 8"]) == 0
    assert s.run(r, [keys.scheduler_lease()], [_LEASE_VALUE]) == 1
    assert not r.exists(keys.scheduler_lease())


@case("events_first_seen")
def _events_first_seen(r: redis.Redis, s: LuaScript) -> None:
    assert s.run(r, (), _seen_args("e1", "e2")) == [1, 1]
    assert s.run(r, (), _seen_args("e2", "e3")) == [0, 1]
    assert 0 < r.ttl(keys.event_seen("g", "e3")) <= 60
