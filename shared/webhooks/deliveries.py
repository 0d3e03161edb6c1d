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
import itertools
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import BaseModel, ConfigDict

from shared import keys, scripts
from shared.clock import iso_time
from shared.messaging.tasks import NOTIFY_QUEUE
from shared.messaging.workqueue import DONE_BUCKET_S
from shared.records import paging
from shared.scriptbatch import ScriptBatcher
from shared.webhooks.endpoints import Secret

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


def _event_of(d: NewDelivery) -> tuple[str, str, str, str, str | None]:
    """What a delivery shares with the other deliveries of its event (and trigger)."""
    return d.tenant, d.event_id, d.event_type, d.trigger, d.traceparent


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


# The fields delivery_begin.lua reads, in its order: a delivery's, then its endpoint's.
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

# The delivery scripts (shared/lua/delivery_*.lua): each names its keys, arguments and answer.
_CREATE: Final = scripts.get("delivery_create")
_CLAIM: Final = scripts.get("delivery_claim")
_BEGIN: Final = scripts.get("delivery_begin")
_FINISH: Final = scripts.get("delivery_finish")
_RELEASE: Final = scripts.get("delivery_release")
_REQUEUE: Final = scripts.get("delivery_requeue")


# The keys delivery_create.lua writes, ``{}`` standing for the id in each: the layout stays in shared.keys.
_CREATE_KEYS: Final = tuple(
    key("{}") for key in (keys.webhook_message, keys.tenant_messages, keys.delivery, keys.webhook_due, keys.webhook_log)
)


class Deliveries:
    """The delivery store for an asyncio Redis client."""

    def __init__(self, client: aioredis.Redis, *, retention_s: int, batcher: ScriptBatcher | None = None) -> None:
        self.client = client
        self.retention_s = retention_s
        # Bound to the client for the batches: attempts run these hundreds of times a second.
        self._create = _CREATE.bind(client)
        self._claim = _CLAIM.bind(client)
        self._begin = _BEGIN.bind(client)
        self._finish = _FINISH.bind(client)
        # Attempts begin and finish many at a time: their calls share round trips.
        self._batch = batcher or ScriptBatcher(client)

    async def create(
        self, new: list[NewDelivery], messages: list[tuple[str, str, int, bytes]], now: int, *, announce: bool = True
    ) -> int:
        """Store event bodies (tenant, event id, time, body) and create deliveries; returns how many were new.

        Idempotent: a delivery or body that exists is left as it is. One script call, in the batch of
        the loop's turn. ``announce``: wake the notifiers' dispatchers when deliveries were created (a
        notifier that dispatches them itself need not; a caller that reads them back first, to answer
        with them as queued, announces them itself afterwards).
        """
        args: list[Any] = [now, self.retention_s, len(messages), *_CREATE_KEYS]
        for tenant, event_id, at_ms, body in messages:
            args += [event_id, tenant, at_ms, body]
        # The deliveries of one event share its fields: they go once, then (id, endpoint) per delivery.
        for (tenant, event_id, event_type, trigger, trace), group in itertools.groupby(new, key=_event_of):
            pairs = [part for d in group for part in (d.id, d.endpoint_id)]
            args += [tenant, event_id, event_type, trigger, trace or "", len(pairs) // 2, *pairs]
        created = int(await self._batch.call(self._create, [keys.WEBHOOK_SCHEDULE], args))
        if created and announce:
            await wake_dispatchers(self.client)
        return created

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
            keys.wq_done(NOTIFY_QUEUE, now // 1000 // DONE_BUCKET_S),
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
        return bool(await _RELEASE.arun(self.client, keys_, [lease, now, e]) == 1)

    async def requeue(self, delivery: Delivery, now: int, *, announce: bool = True) -> int:
        """Queue a delivery again at once with a fresh retry budget: 1, 0 (gone) or -1 (an attempt is under way).

        ``announce``: wake the notifiers' dispatchers when it was queued (a caller that reads the delivery back
        first, to answer with it as queued, announces it itself afterwards).
        """
        e = delivery.endpoint_id
        keys_ = (keys.delivery(delivery.id), keys.webhook_due(e), keys.WEBHOOK_SCHEDULE)
        moved = int(await _REQUEUE.arun(self.client, keys_, [now, e, self.retention_s]))
        if moved == 1 and announce:
            await wake_dispatchers(self.client)
        return moved

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


async def wake_dispatchers(client: aioredis.Redis) -> None:
    """Tell the notifiers' dispatchers that deliveries fell due outside them: they read the schedule now, not
    at their next fallback poll."""
    await client.publish(keys.WEBHOOK_WAKE, b"")


async def queue_stats(client: aioredis.Redis, now: int) -> QueueStats:
    """Count the deliveries of every endpoint of every tenant (for operators, not hot paths).

    The endpoints are read from the tenants' indexes, then their queues in one pipeline: no keyspace scan.
    """
    tenants = [keys.text(t) for t in await client.smembers(keys.tenants())]
    async with client.pipeline(transaction=False) as pipe:
        for tenant in tenants:
            pipe.zrange(keys.tenant_webhooks(tenant), 0, -1)
        owned = await pipe.execute()
    endpoint_ids = sorted({keys.text(e) for members in owned for e in members})
    async with client.pipeline(transaction=False) as pipe:
        for e in endpoint_ids:
            pipe.zcount(keys.webhook_due(e), "-inf", now)
            pipe.zcount(keys.webhook_due(e), f"({now}", "+inf")
            pipe.zrange(keys.webhook_due(e), 0, 0, withscores=True)
            pipe.zcard(keys.webhook_in_flight(e))
        found = await pipe.execute()
    due = delayed = in_flight = 0
    oldest: int | None = None
    for i in range(len(endpoint_ids)):
        ready, later, head, held = found[4 * i : 4 * i + 4]
        due, delayed, in_flight = due + int(ready), delayed + int(later), in_flight + int(held)
        if ready and head:
            oldest = int(head[0][1]) if oldest is None else min(oldest, int(head[0][1]))
    bucket = now // 1000 // DONE_BUCKET_S
    counts = await client.mget([keys.wq_done(NOTIFY_QUEUE, bucket - i) for i in range(60 // DONE_BUCKET_S)])
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
