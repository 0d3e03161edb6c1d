"""Webhook deliveries: one per (event, endpoint), its attempts, and the per-endpoint queue that starts them.

Each endpoint has its own queue of waiting deliveries (scored by when each may next be tried) and
its own set of attempts under way, each held under a lease. A claim (one Lua script) takes due
deliveries only while the endpoint has fewer than ``concurrency`` attempts in flight, so a slow or
dead endpoint holds at most that many attempts while every other endpoint's deliveries go ahead.
A lease that runs out (its worker died) puts the delivery back in the queue. The global schedule
(:data:`shared.keys.WEBHOOK_SCHEDULE`) says when each endpoint next needs looking at, so the
dispatcher never scans idle endpoints.

A delivery's state: ``pending`` (waiting for its next attempt), ``delivering`` (claimed),
``succeeded``, ``failed`` (given up without a retry: the endpoint answered 410 Gone or is gone) or
``exhausted`` (every attempt failed). A delivery created for an event has an id derived from the
event and the endpoint, so handling the same event twice creates it once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import BaseModel, ConfigDict

from shared import keys, paging
from shared.scriptbatch import ScriptBatcher
from shared.tasks import NOTIFY_QUEUE
from shared.webhooks.endpoints import Secret, iso_time
from shared.workqueue import DONE_BUCKET_S, done_key

if TYPE_CHECKING:
    import redis.asyncio as aioredis

#: A delivery keeps its last attempts only; an exhausted one has at most ``max_attempts`` anyway.
MAX_ATTEMPTS_KEPT: Final = 100


class DeliveryState(StrEnum):
    """Lifecycle of a delivery."""

    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXHAUSTED = "exhausted"


class Outcome(StrEnum):
    """How an attempt ended, as far as the delivery is concerned."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    EXHAUSTED = "exhausted"


def event_delivery_id(event_id: str, endpoint_id: str) -> str:
    """The delivery of an event to an endpoint: the same id however often the event is handled."""
    return "dlv_" + hashlib.sha256(f"{event_id}:{endpoint_id}".encode()).hexdigest()[:24]


def new_delivery_id() -> str:
    """A fresh delivery id (a replay or a test sends the same event again as a new delivery)."""
    return "dlv_" + uuid.uuid4().hex[:24]


class Attempt(BaseModel):
    """One try: when, the answer's status (None if there was none), how long it took, the start of the answer."""

    model_config = ConfigDict(frozen=True)

    n: int
    at: datetime
    status: int | None
    latency_ms: float
    response: str = ""
    error: str | None = None


class Delivery(BaseModel):
    """One event on its way to one endpoint."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    endpoint_id: str
    event_id: str
    event_type: str
    trigger: str
    state: DeliveryState
    attempts: int = 0
    round_start: int = 0
    created_ms: int
    next_ms: int | None = None
    last_ms: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    dead_letter: str | None = None
    traceparent: str | None = None

    @property
    def round_attempts(self) -> int:
        """Attempts made since the delivery was last (re)queued: what the retry budget counts."""
        return self.attempts - self.round_start

    def public(self, attempts: list[Attempt] | None = None) -> dict[str, Any]:
        """The JSON the API answers."""
        out: dict[str, Any] = {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "trigger": self.trigger,
            "state": self.state.value,
            "attempt_count": self.attempts,
            "created_at": iso_time(self.created_ms),
            "next_attempt_at": iso_time(self.next_ms) if self.state is DeliveryState.PENDING else None,
            "last_attempt_at": iso_time(self.last_ms),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "dead_letter": self.dead_letter,
        }
        if attempts is not None:
            out["attempts"] = [a.model_dump(mode="json") for a in attempts]
        return out


def _decode_delivery(raw: Mapping[bytes | str, bytes | str]) -> Delivery | None:
    if not raw:
        return None
    data: dict[str, Any] = {keys.text(k): keys.text(v) for k, v in raw.items()}
    for name in ("lease", "begun"):
        data.pop(name, None)
    for name in ("last_status", "last_error", "next_ms", "last_ms", "dead_letter", "traceparent"):
        if data.get(name) == "":
            data.pop(name)
    return Delivery.model_validate(data)


def _decode_attempts(raw: list[Any]) -> list[Attempt]:
    return [Attempt.model_validate_json(item) for item in raw]


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to create: which event goes to which endpoint, and why."""

    id: str
    endpoint_id: str
    tenant: str
    event_id: str
    event_type: str
    trigger: str = "event"
    traceparent: str | None = None  # the trace its attempts continue


@dataclass(frozen=True)
class Target:
    """What an attempt needs of its endpoint."""

    id: str
    tenant: str
    url: str
    disabled: bool
    secrets: tuple[Secret, ...]

    def signing_secrets(self, at_ms: int) -> list[str]:
        """The secrets that sign a request made at ``at_ms``: the current one and any still in their grace period."""
        return [s.key for s in self.secrets if s.expires_ms is None or s.expires_ms > at_ms]


@dataclass(frozen=True)
class Started:
    """What an attempt needs, handed out once per lease: the delivery, its endpoint and the body to send."""

    delivery: Delivery
    endpoint: Target | None
    body: bytes | None


# The fields :data:`_BEGIN` reads, in order.
_DELIVERY_FIELDS: Final = (
    "id",
    "tenant",
    "endpoint_id",
    "event_id",
    "event_type",
    "trigger",
    "state",
    "attempts",
    "round_start",
    "created_ms",
    "traceparent",
)
_TARGET_FIELDS: Final = ("url", "disabled", "secrets", "tenant")


def _lua_key(key: Callable[[str], str], var: str) -> str:
    """A Lua expression for ``key(var)``, where ``var`` is a Lua variable: the layout stays in :mod:`shared.keys`."""
    head, tail = key("\0").split("\0")
    return f"'{head}' .. {var}" + (f" .. '{tail}'" if tail else "")


# KEYS: schedule. ARGV: now (ms), TTL (s), how many event bodies, then per body: event id, tenant,
# time (ms), body; then per delivery: id, endpoint id, tenant, event id, event type, trigger,
# traceparent. Stores the bodies that are not stored yet and indexes them for replay per tenant
# (dropping what is past the TTL), creates the deliveries that do not exist yet, queues them due now,
# and returns how many deliveries it created.
_CREATE = f"""
local now, ttl, bodies = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = now - ttl * 1000
local tenants = {{}}
local first = 4 + 4 * bodies
for i = 4, first - 1, 4 do
  local event, tenant = ARGV[i], ARGV[i + 1]
  redis.call('SET', {_lua_key(keys.webhook_message, "event")}, ARGV[i + 3], 'EX', ttl, 'NX')
  redis.call('ZADD', {_lua_key(keys.tenant_messages, "tenant")}, ARGV[i + 2], event)
  tenants[tenant] = true
end
for tenant in pairs(tenants) do
  redis.call('ZREMRANGEBYSCORE', {_lua_key(keys.tenant_messages, "tenant")}, '-inf', cutoff)
end
local created = 0
for i = first, #ARGV, 7 do
  local id, ep = ARGV[i], ARGV[i + 1]
  local dkey = {_lua_key(keys.delivery, "id")}
  if redis.call('EXISTS', dkey) == 0 then
    redis.call('HSET', dkey, 'id', id, 'endpoint_id', ep, 'tenant', ARGV[i + 2], 'event_id', ARGV[i + 3],
      'event_type', ARGV[i + 4], 'trigger', ARGV[i + 5], 'state', 'pending', 'attempts', 0, 'round_start', 0,
      'created_ms', now, 'next_ms', now, 'traceparent', ARGV[i + 6])
    redis.call('EXPIRE', dkey, ttl)
    redis.call('ZADD', {_lua_key(keys.webhook_due, "ep")}, now, id)
    local log = {_lua_key(keys.webhook_log, "ep")}
    redis.call('ZADD', log, now, id)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    redis.call('ZADD', KEYS[1], 'LT', now, ep)
    created = created + 1
  end
end
return created
"""

# KEYS: endpoint, its queue, its in-flight set, schedule. ARGV: endpoint id, now, concurrency, lease
# (ms), most claims, lease prefix, delivery key prefix, concurrency while failing. Puts back
# deliveries whose lease ran out, then claims due deliveries while the endpoint (which must exist and
# be enabled) has free slots, and reschedules the endpoint. An endpoint whose last attempt failed
# gets the smaller concurrency until an attempt succeeds again, so dead endpoints hold few of the
# process's slots. Returns {id, lease, id, lease, ...}.
_CLAIM = """
local now, concurrency = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'failing_since_ms') == 1 then
  concurrency = math.min(concurrency, tonumber(ARGV[8]))
end
local dprefix = ARGV[7]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], id)
  if redis.call('EXISTS', dprefix .. id) == 1 then
    redis.call('HSET', dprefix .. id, 'state', 'pending', 'lease', '', 'next_ms', now)
    redis.call('ZADD', KEYS[2], now, id)
  end
end
local out = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return out
end
if redis.call('HGET', KEYS[1], 'disabled') == '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return out
end
local want = math.min(concurrency - redis.call('ZCARD', KEYS[3]), tonumber(ARGV[5]))
if want > 0 then
  for i, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, want)) do
    redis.call('ZREM', KEYS[2], id)
    local dkey = dprefix .. id
    if redis.call('EXISTS', dkey) == 1 then
      local lease = ARGV[6] .. i
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
      redis.call('HSET', dkey, 'state', 'delivering', 'lease', lease)
      out[#out + 1] = id
      out[#out + 1] = lease
    end
  end
end
local nxt = nil
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if head[2] and redis.call('ZCARD', KEYS[3]) < concurrency then nxt = tonumber(head[2]) end
local held = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if held[2] and (nxt == nil or tonumber(held[2]) < nxt) then nxt = tonumber(held[2]) end
if nxt then redis.call('ZADD', KEYS[4], nxt, ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
return out
"""

# KEYS: delivery. ARGV: lease, endpoint key prefix, message key prefix. Begins the attempt of a
# lease once (a duplicated message finds it begun) and returns the delivery's and the endpoint's
# fields named above (in that order) and the body to send.
_BEGIN = f"""
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'begun') == ARGV[1] then
  return false
end
redis.call('HSET', KEYS[1], 'begun', ARGV[1])
local d = redis.call('HMGET', KEYS[1], '{"', '".join(_DELIVERY_FIELDS)}')
local e = redis.call('HMGET', ARGV[2] .. d[3], '{"', '".join(_TARGET_FIELDS)}')
return {{d, e, redis.call('GET', ARGV[3] .. d[4])}}
"""

# KEYS: delivery, its attempts, endpoint, queue, in-flight set, schedule, done counter. ARGV: lease, now, outcome,
# next attempt (ms), attempt JSON, status, error, TTL (s), disable-after (ms), disable reason ('' =
# not now), reason when failing too long, endpoint id, attempts kept. Records the attempt and
# the delivery's new state (a retry of a deleted endpoint's delivery fails instead), tracks the
# endpoint's failing streak and disables it when due.
# Returns {1, newly disabled (0/1), reason}, or {0} for a lease that is no longer current.
_FINISH = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return {0} end
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[8])
local live = redis.call('EXISTS', KEYS[3]) == 1
local outcome = ARGV[3]
if outcome == 'retry' and not live then outcome = 'failed' end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[5], id)
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[13]), -1)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_ms', now, 'last_status', ARGV[6], 'last_error', ARGV[7], 'lease', '')
redis.call('HDEL', KEYS[1], 'begun')
redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], 120)
if outcome == 'retry' then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', ARGV[4])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[4]), id)
  redis.call('ZADD', KEYS[6], 'LT', tonumber(ARGV[4]), ARGV[12])
else
  redis.call('HSET', KEYS[1], 'state', outcome)
  redis.call('HDEL', KEYS[1], 'next_ms')
end
if not live then return {1, 0, ''} end
if redis.call('ZCARD', KEYS[4]) > 0 then redis.call('ZADD', KEYS[6], 'LT', now, ARGV[12]) end
if outcome == 'succeeded' then
  redis.call('HDEL', KEYS[3], 'failing_since_ms')
  return {1, 0, ''}
end
local since = tonumber(redis.call('HGET', KEYS[3], 'failing_since_ms') or '')
if not since then
  since = now
  redis.call('HSET', KEYS[3], 'failing_since_ms', now)
end
local reason = ARGV[10]
if reason == '' and now - since >= tonumber(ARGV[9]) then reason = ARGV[11] end
if reason ~= '' and redis.call('HGET', KEYS[3], 'disabled') ~= '1' then
  redis.call('HSET', KEYS[3], 'disabled', '1', 'disabled_reason', reason, 'disabled_ms', now)
  redis.call('ZREM', KEYS[6], ARGV[12])
  return {1, 1, reason}
end
return {1, 0, ''}
"""

# KEYS: delivery, queue, in-flight set, schedule. ARGV: lease, now, endpoint id. Hands back a claim
# whose attempt was never made (shutdown, or the endpoint was disabled meanwhile): due again now.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), id)
redis.call('HSET', KEYS[1], 'state', 'pending', 'lease', '', 'next_ms', ARGV[2])
redis.call('HDEL', KEYS[1], 'begun')
redis.call('ZADD', KEYS[4], 'LT', tonumber(ARGV[2]), ARGV[3])
return 1
"""

# KEYS: delivery, queue, schedule. ARGV: now, endpoint id, TTL (s). Queues a delivery again at once
# with a fresh retry budget. Returns 1, 0 (no such delivery) or -1 (an attempt is under way).
_REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'delivering' then return -1 end
local made = redis.call('HGET', KEYS[1], 'attempts')
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', ARGV[1], 'round_start', made)
redis.call('HDEL', KEYS[1], 'dead_letter')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), redis.call('HGET', KEYS[1], 'id'))
redis.call('ZADD', KEYS[3], 'LT', tonumber(ARGV[1]), ARGV[2])
return 1
"""


class Deliveries:
    """The delivery store for an asyncio Redis client."""

    def __init__(self, client: aioredis.Redis, *, retention_s: int, batcher: ScriptBatcher | None = None) -> None:
        self.client = client
        self.retention_s = retention_s
        # Sent by their SHA once Redis knows them: attempts run these hundreds of times a second.
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)
        # Attempts begin and finish many at a time: their calls share round trips.
        self._batch = batcher or ScriptBatcher(client)

    async def create(self, new: list[NewDelivery], messages: list[tuple[str, str, int, bytes]], now: int) -> int:
        """Store event bodies (tenant, event id, time, body) and create deliveries; returns how many were new.

        Idempotent: a delivery or body that exists is left as it is. One script call, in the batch of
        the loop's turn.
        """
        args: list[Any] = [now, self.retention_s, len(messages)]
        for tenant, event_id, at_ms, body in messages:
            args += [event_id, tenant, at_ms, body]
        for d in new:
            args += [d.id, d.endpoint_id, d.tenant, d.event_id, d.event_type, d.trigger, d.traceparent or ""]
        return int(await self._batch.call(self._create, [keys.WEBHOOK_SCHEDULE], args))

    async def claim(
        self,
        endpoint_id: str,
        now: int,
        *,
        concurrency: int,
        lease_ms: int,
        limit: int = 100,
        failing_concurrency: int | None = None,
    ) -> list[tuple[str, str]]:
        """Claim due deliveries of an endpoint up to its free slots: ``(delivery id, lease)`` pairs.

        ``failing_concurrency`` (default: ``concurrency``) caps the slots of an endpoint that is failing.
        """
        keys_ = (
            keys.webhook(endpoint_id),
            keys.webhook_due(endpoint_id),
            keys.webhook_in_flight(endpoint_id),
            keys.WEBHOOK_SCHEDULE,
        )
        failing = concurrency if failing_concurrency is None else failing_concurrency
        lease_prefix = secrets.token_hex(8) + ":"
        args = (endpoint_id, now, concurrency, lease_ms, limit, lease_prefix, keys.delivery(""), failing)
        found = await self._batch.call(self._claim, keys_, args)
        pairs = [keys.text(x) for x in found]
        return list(zip(pairs[::2], pairs[1::2], strict=True))

    async def begin(self, delivery_id: str, lease: str) -> Started | None:
        """Start the attempt a lease allows; None if the lease is stale or its attempt already began."""
        args = (lease, keys.webhook(""), keys.webhook_message(""))
        found = await self._batch.call(self._begin, [keys.delivery(delivery_id)], args)
        if not found:
            return None
        raw_delivery, raw_target, body = found
        if raw_delivery[0] is None:
            return None
        delivery = Delivery.model_validate(
            {name: keys.text(v) for name, v in zip(_DELIVERY_FIELDS, raw_delivery, strict=True) if v}
        )
        url, disabled, secrets_json, tenant = raw_target
        target = None
        if url is not None:
            target = Target(
                id=delivery.endpoint_id,
                tenant=keys.text(tenant),
                url=keys.text(url),
                disabled=disabled == b"1",
                secrets=tuple(Secret.model_validate(s) for s in json.loads(secrets_json or b"[]")),
            )
        return Started(delivery, target, bytes(body) if body is not None else None)

    async def finish(
        self,
        delivery: Delivery,
        lease: str,
        attempt: Attempt,
        outcome: Outcome,
        *,
        now: int,
        next_ms: int = 0,
        disable_after_ms: int,
        disable_reason: str = "",
        stale_reason: str = "",
    ) -> tuple[bool, bool, str]:
        """Record an attempt and what follows; returns (recorded, endpoint newly disabled, why disabled)."""
        e = delivery.endpoint_id
        keys_ = (
            keys.delivery(delivery.id),
            keys.delivery_attempts(delivery.id),
            keys.webhook(e),
            keys.webhook_due(e),
            keys.webhook_in_flight(e),
            keys.WEBHOOK_SCHEDULE,
            done_key(NOTIFY_QUEUE, now // 1000 // DONE_BUCKET_S),
        )
        args = (
            lease,
            now,
            outcome.value,
            next_ms,
            attempt.model_dump_json(),
            "" if attempt.status is None else attempt.status,
            attempt.error or "",
            self.retention_s,
            disable_after_ms,
            disable_reason,
            stale_reason,
            e,
            MAX_ATTEMPTS_KEPT,
        )
        found = await self._batch.call(self._finish, keys_, args)
        if int(found[0]) != 1:
            return False, False, ""
        return True, int(found[1]) == 1, keys.text(found[2])

    async def release(self, delivery: Delivery | NewDelivery, lease: str, now: int) -> bool:
        """Hand back a claimed delivery whose attempt was not made; it is due again at once."""
        e = delivery.endpoint_id
        keys_ = (keys.delivery(delivery.id), keys.webhook_due(e), keys.webhook_in_flight(e), keys.WEBHOOK_SCHEDULE)
        return bool(await self._release(keys=keys_, args=[lease, now, e]) == 1)

    async def requeue(self, delivery: Delivery, now: int) -> int:
        """Queue a delivery again at once with a fresh retry budget: 1, 0 (gone) or -1 (an attempt is under way)."""
        e = delivery.endpoint_id
        keys_ = (keys.delivery(delivery.id), keys.webhook_due(e), keys.WEBHOOK_SCHEDULE)
        return int(await self._requeue(keys=keys_, args=[now, e, self.retention_s]))

    async def set_dead_letter(self, delivery_id: str, letter_id: str) -> None:
        """Remember the dead letter an exhausted delivery left."""
        await self.client.hset(keys.delivery(delivery_id), "dead_letter", letter_id)

    async def get(self, tenant: str, delivery_id: str) -> Delivery | None:
        """A tenant's delivery, or None."""
        found = _decode_delivery(await self.client.hgetall(keys.delivery(delivery_id)))
        return found if found is not None and found.tenant == tenant else None

    async def attempts(self, delivery_id: str) -> list[Attempt]:
        """A delivery's attempts, oldest first."""
        return _decode_attempts(await self.client.lrange(keys.delivery_attempts(delivery_id), 0, -1))

    async def scan(
        self,
        endpoint_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        state: DeliveryState | None = None,
        event_type: str | None = None,
    ) -> tuple[list[tuple[Delivery, list[Attempt]]], str | None]:
        """An endpoint's deliveries with their attempts, newest first, and the cursor after them.

        Raises:
            InvalidInput: the cursor is malformed.
        """
        out: list[tuple[Delivery, list[Attempt]]] = []
        next_cursor: str | None = None
        pages = paging.newest_first(self.client, keys.webhook_log(endpoint_id), cursor=cursor)
        async for rows in pages:
            async with self.client.pipeline(transaction=False) as pipe:
                for delivery_id, _ in rows:
                    pipe.hgetall(keys.delivery(delivery_id))
                    pipe.lrange(keys.delivery_attempts(delivery_id), 0, -1)
                found = await pipe.execute()
            for (delivery_id, score), raw, tries in zip(rows, found[::2], found[1::2], strict=True):
                delivery = _decode_delivery(raw)
                if delivery is None:
                    continue
                wanted = state is None or delivery.state is state
                if wanted and (event_type is None or delivery.event_type == event_type):
                    out.append((delivery, _decode_attempts(tries)))
                    if len(out) == limit:
                        next_cursor = paging.cursor_of(score, delivery_id)
                        break
            if next_cursor is not None:
                break
        await pages.aclose()
        return out, next_cursor

    async def due_endpoints(self, now: int, limit: int = 500) -> list[str]:
        """Endpoints whose deliveries need looking at by ``now``."""
        found = await self.client.zrangebyscore(keys.WEBHOOK_SCHEDULE, "-inf", now, start=0, num=limit)
        return [keys.text(e) for e in cast(list[bytes], found)]

    async def next_wake_ms(self) -> int | None:
        """When the next endpoint needs looking at, or None when none does."""
        head = cast(list[tuple[bytes, float]], await self.client.zrange(keys.WEBHOOK_SCHEDULE, 0, 0, withscores=True))
        return int(head[0][1]) if head else None

    async def message_ids(self, tenant: str, since_ms: int, until_ms: int | None) -> list[tuple[str, int]]:
        """A tenant's delivered events from ``since_ms`` up to (not including) ``until_ms``, oldest first."""
        found = await self.client.zrangebyscore(
            keys.tenant_messages(tenant), since_ms, "+inf" if until_ms is None else f"({until_ms}", withscores=True
        )
        return [(keys.text(m), int(s)) for m, s in cast(list[tuple[bytes, float]], found)]

    async def messages(self, event_ids: list[str]) -> list[bytes | None]:
        """The stored bodies of events (None where one expired)."""
        if not event_ids:
            return []
        found = cast(list[bytes | None], await self.client.mget([keys.webhook_message(e) for e in event_ids]))
        return [bytes(b) if b is not None else None for b in found]


@dataclass(frozen=True)
class QueueStats:
    """Deliveries across every endpoint: due now, waiting for a retry, under way, and recent attempts."""

    due: int
    delayed: int
    in_flight: int
    oldest_due_ms: int | None
    attempts_last_minute: int


async def queue_stats(client: aioredis.Redis, now: int) -> QueueStats:
    """Count the deliveries of every endpoint (scans the endpoints' queues; for operators, not hot paths)."""
    due = delayed = in_flight = 0
    oldest: int | None = None
    async for key in client.scan_iter(match=keys.webhook_due("*"), count=500):
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcount(key, "-inf", now)
            pipe.zcount(key, f"({now}", "+inf")
            pipe.zrange(key, 0, 0, withscores=True)
            ready, later, head = await pipe.execute()
        due, delayed = due + int(ready), delayed + int(later)
        if ready and head:
            oldest = int(head[0][1]) if oldest is None else min(oldest, int(head[0][1]))
    async for key in client.scan_iter(match=keys.webhook_in_flight("*"), count=500):
        in_flight += int(await client.zcard(key))
    bucket = now // 1000 // DONE_BUCKET_S
    counts = await client.mget([done_key(NOTIFY_QUEUE, bucket - i) for i in range(60 // DONE_BUCKET_S)])
    done = sum(int(c) for c in cast(list[bytes | None], counts) if c is not None)
    return QueueStats(due, delayed, in_flight, oldest, done)


def read_stored(body: bytes) -> tuple[str, Mapping[str, Any]] | None:
    """The ``type`` and ``data`` of a stored CloudEvents body (None if it cannot be read)."""
    try:
        event = json.loads(body)
        found, data = event.get("type"), event.get("data")
    except (ValueError, AttributeError):
        return None
    return (found, data if isinstance(data, dict) else {}) if isinstance(found, str) else None
