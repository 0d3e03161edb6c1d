"""Webhook endpoints: where a tenant wants events sent, which ones, and the secrets that sign them.

An endpoint is a Redis hash (times in milliseconds, so the delivery scripts can read and write them)
indexed per tenant. Secrets follow Standard Webhooks: ``whsec_`` and base64 of 32 random bytes. A
rotation keeps the previous secret signing for a grace period, so every request carries one
signature per live secret and receivers can switch over without dropping a request.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import redis.exceptions
from pydantic import BaseModel, ConfigDict, Field

from shared import keys, scripts
from shared.clock import iso_time, now_ms
from shared.constants import MAX_WEBHOOKS_PER_TENANT
from shared.errors import Conflict, InvalidInput
from shared.messaging.events import EVENT_TYPES, WebhookDeliveryExhausted, WebhookEndpointDisabled, WebhookTest

if TYPE_CHECKING:
    import redis.asyncio as aioredis

SECRET_PREFIX: Final = "whsec_"
_SECRET_BYTES: Final = 32

#: Every event type a webhook can subscribe to: the tenant's own (a test event goes out on request only).
EVENT_TYPE_NAMES: Final = tuple(
    sorted(t for t, model in EVENT_TYPES.items() if "tenant" in model.model_fields and t != WebhookTest.TYPE)
)


# Stores an endpoint with the event stream's last entry id, atomically; returns that id.
_CREATE: Final = scripts.get("webhook_create")


def entry_position(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# An endpoint's creation point, parsed once: the fan-out compares every event of every batch with it.
_created_at = functools.lru_cache(maxsize=4096)(entry_position)


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def check_event_types(patterns: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated subscription patterns: ``*``, an exact type, or a prefix like ``job.*``.

    Raises:
        InvalidInput: a pattern matches no known event type.
    """
    out: list[str] = []
    for pattern in patterns:
        if pattern == "*" or pattern in EVENT_TYPE_NAMES:
            ok = True
        elif pattern.endswith(".*") and "*" not in pattern[:-2]:
            ok = any(name.startswith(pattern[:-1]) for name in EVENT_TYPE_NAMES)
        else:
            ok = False
        if not ok:
            raise InvalidInput(
                f"unknown event type {pattern!r}; use '*', one of {', '.join(EVENT_TYPE_NAMES)}, "
                "or a prefix such as 'job.*'"
            )
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an event type matches any of the patterns."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type or (pattern.endswith(".*") and event_type.startswith(pattern[:-1])):
            return True
    return False


class Secret(BaseModel):
    """A signing secret; a rotated-out one expires."""

    model_config = ConfigDict(frozen=True)

    key: str
    expires_ms: int | None = None


class Endpoint(BaseModel):
    """A webhook endpoint as stored; :meth:`public` is what the API shows (never the secrets)."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    url: str
    description: str = ""
    event_types: tuple[str, ...]
    disabled: bool = False
    disabled_reason: str | None = None
    disabled_ms: int | None = None
    failing_since_ms: int | None = None
    created_ms: int
    updated_ms: int
    after_entry: str = "0-0"
    secrets: tuple[Secret, ...] = Field(default=(), exclude=True)

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to ``event_type``."""
        return matches(self.event_types, event_type)

    def existed_at(self, entry_id: str) -> bool:
        """Whether the endpoint existed when the stream entry ``entry_id`` was appended."""
        return entry_position(entry_id) > _created_at(self.after_entry)

    def public(self) -> dict[str, Any]:
        """The JSON the API answers."""
        previous = [s.expires_ms for s in self.secrets if s.expires_ms is not None and s.expires_ms > now_ms()]
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types),
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
            "disabled_at": iso_time(self.disabled_ms),
            "failing_since": iso_time(self.failing_since_ms),
            "previous_secret_expires_at": iso_time(max(previous)) if previous else None,
            "created_at": iso_time(self.created_ms),
            "updated_at": iso_time(self.updated_ms),
        }


# Events that report on one endpoint (its failure); never sent to that endpoint itself.
_REPORTS_ON_ENDPOINT: Final = frozenset({WebhookDeliveryExhausted.TYPE, WebhookEndpointDisabled.TYPE})


def reports_on(endpoint_id: str, event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether an event reports on this very endpoint (it is failing or disabled: never sent to it)."""
    return event_type in _REPORTS_ON_ENDPOINT and data.get("endpoint_id") == endpoint_id


def _to_hash(endpoint: Endpoint) -> dict[str, str]:
    out = {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": json.dumps(list(endpoint.event_types)),
        "disabled": "1" if endpoint.disabled else "0",
        "created_ms": str(endpoint.created_ms),
        "updated_ms": str(endpoint.updated_ms),
        "secrets": json.dumps([s.model_dump() for s in endpoint.secrets]),
    }
    if endpoint.disabled_reason is not None:
        out["disabled_reason"] = endpoint.disabled_reason
    if endpoint.disabled_ms is not None:
        out["disabled_ms"] = str(endpoint.disabled_ms)
    return out


def decode(raw: Mapping[bytes | str, bytes | str]) -> Endpoint | None:
    """An endpoint from its Redis hash (None for an empty one)."""
    if not raw:
        return None
    data = {keys.text(k): keys.text(v) for k, v in raw.items()}
    ints = {k: int(data[k]) for k in ("disabled_ms", "failing_since_ms") if data.get(k)}
    return Endpoint(
        id=data["id"],
        tenant=data["tenant"],
        url=data["url"],
        description=data.get("description", ""),
        event_types=tuple(json.loads(data["event_types"])),
        disabled=data.get("disabled") == "1",
        disabled_reason=data.get("disabled_reason") or None,
        created_ms=int(data["created_ms"]),
        updated_ms=int(data["updated_ms"]),
        after_entry=data.get("after_entry", "0-0"),
        secrets=tuple(Secret.model_validate(s) for s in json.loads(data.get("secrets", "[]"))),
        **ints,
    )


async def server_ms(client: aioredis.Redis) -> int:
    """Redis's clock in milliseconds: the clock stream entry ids are stamped with."""
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def create(
    client: aioredis.Redis,
    tenant: str,
    url: str,
    event_types: tuple[str, ...],
    description: str = "",
    *,
    disabled: bool = False,
) -> tuple[Endpoint, str]:
    """Store a new endpoint with a fresh secret; returns it and the secret (shown only this once).

    It records the event stream's position in the same atomic step, so it receives exactly the
    events published after it was created.

    Raises:
        Conflict: the tenant already has the maximum number of endpoints.
    """
    if await client.zcard(keys.tenant_webhooks(tenant)) >= MAX_WEBHOOKS_PER_TENANT:
        raise Conflict(f"a tenant can have at most {MAX_WEBHOOKS_PER_TENANT} webhook endpoints")
    stamp = await server_ms(client)
    secret = new_secret()
    endpoint = Endpoint(
        id="ep_" + uuid.uuid4().hex[:20],
        tenant=tenant,
        url=url,
        description=description,
        event_types=event_types,
        disabled=disabled,
        disabled_reason="disabled on creation" if disabled else None,
        disabled_ms=stamp if disabled else None,
        created_ms=stamp,
        updated_ms=stamp,
        secrets=(Secret(key=secret),),
    )
    fields = [item for pair in _to_hash(endpoint).items() for item in pair]
    after = await _CREATE.arun(
        client,
        [keys.webhook(endpoint.id), keys.tenant_webhooks(tenant), keys.EVENTS_STREAM],
        [stamp, endpoint.id, *fields],
    )
    return endpoint.model_copy(update={"after_entry": keys.text(after)}), secret


async def get(client: aioredis.Redis, tenant: str, endpoint_id: str) -> Endpoint | None:
    """A tenant's endpoint, or None (also for another tenant's)."""
    endpoint = decode(await client.hgetall(keys.webhook(endpoint_id)))
    return endpoint if endpoint is not None and endpoint.tenant == tenant else None


async def list_for(client: aioredis.Redis, tenant: str) -> list[Endpoint]:
    """A tenant's endpoints, oldest first."""
    members = cast(list[bytes], await client.zrange(keys.tenant_webhooks(tenant), 0, -1))
    ids = [keys.text(i) for i in members]
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for endpoint_id in ids:
            pipe.hgetall(keys.webhook(endpoint_id))
        found = [decode(raw) for raw in await pipe.execute()]
    return [e for e in found if e is not None]


async def update(
    client: aioredis.Redis,
    endpoint: Endpoint,
    *,
    url: str | None = None,
    event_types: tuple[str, ...] | None = None,
    description: str | None = None,
    disabled: bool | None = None,
) -> Endpoint:
    """Change the given fields; enabling a disabled endpoint resumes its pending deliveries.

    Only the named fields are written, so a concurrent attempt's own updates (failure tracking,
    an automatic disable) are never overwritten with stale values.
    """
    stamp = await server_ms(client)
    changes: dict[str, str] = {"updated_ms": str(stamp)}
    if url is not None:
        changes["url"] = url
    if event_types is not None:
        changes["event_types"] = json.dumps(list(event_types))
    if description is not None:
        changes["description"] = description
    key = keys.webhook(endpoint.id)
    async with client.pipeline(transaction=True) as pipe:
        if disabled is True and not endpoint.disabled:
            changes |= {"disabled": "1", "disabled_reason": "disabled by request", "disabled_ms": str(stamp)}
        elif disabled is False and endpoint.disabled:
            changes["disabled"] = "0"
            pipe.hdel(key, "disabled_reason", "disabled_ms", "failing_since_ms")
            # Its waiting deliveries are due again: let the dispatchers look at it now.
            pipe.zadd(keys.WEBHOOK_SCHEDULE, {endpoint.id: stamp})
            pipe.publish(keys.WEBHOOK_WAKE, b"")
        pipe.hset(key, mapping=changes)  # type: ignore[arg-type]
        await pipe.execute()
    updated = await get(client, endpoint.tenant, endpoint.id)
    if updated is None:
        raise Conflict(f"webhook {endpoint.id} was deleted meanwhile")
    return updated


async def rotate_secret(client: aioredis.Redis, endpoint: Endpoint, *, grace_s: int) -> tuple[Endpoint, str]:
    """Give the endpoint a new secret; the current one keeps signing for ``grace_s``. Returns the new secret.

    Raises:
        Conflict: the endpoint was deleted meanwhile.
    """
    key = keys.webhook(endpoint.id)
    secret = new_secret()
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                current = decode(await pipe.hgetall(key))
                if current is None:
                    raise Conflict(f"webhook {endpoint.id} was deleted meanwhile")
                stamp = await server_ms(client)
                expires = stamp + grace_s * 1000
                kept = [
                    Secret(key=s.key, expires_ms=expires if s.expires_ms is None else min(s.expires_ms, expires))
                    for s in current.secrets
                    if s.expires_ms is None or s.expires_ms > stamp
                ]
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(
                    key,
                    mapping={
                        "secrets": json.dumps([Secret(key=secret).model_dump(), *(s.model_dump() for s in kept)]),
                        "updated_ms": str(stamp),
                    },
                )
                await pipe.execute()
                break
            except redis.exceptions.WatchError:
                continue
    rotated = await get(client, endpoint.tenant, endpoint.id)
    if rotated is None:
        raise Conflict(f"webhook {endpoint.id} was deleted meanwhile")
    return rotated, secret


async def delete(client: aioredis.Redis, endpoint: Endpoint) -> None:
    """Remove the endpoint, its queue and its delivery log (delivery records expire on their own)."""
    e = endpoint.id
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.webhook(e), keys.webhook_due(e), keys.webhook_in_flight(e), keys.webhook_log(e))
        pipe.zrem(keys.tenant_webhooks(endpoint.tenant), e)
        pipe.zrem(keys.WEBHOOK_SCHEDULE, e)
        await pipe.execute()
