"""API keys: random secrets shown once, stored only as SHA-256 hashes with their tenant and role.

A key has a public id (``key_…``) for listing and revoking it; the secret itself is never stored,
logged or shown again after it is created. The blocking functions serve the CLI and start-up, the
``a``-prefixed ones the gateway.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from shared import clock, keys
from shared.constants import TENANT_NAME_PATTERN
from shared.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Iterable

    import redis
    import redis.asyncio as aioredis

KEY_PREFIX = "sf_"
ID_PREFIX = "key_"
MAX_NAME_LENGTH: Final = 100
_TENANT: Final = re.compile(TENANT_NAME_PATTERN)


class Role(StrEnum):
    """What a key may do: a reader searches and reads, a writer also writes, an admin also operates."""

    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"

    def allows(self, required: Role) -> bool:
        """Whether this role includes everything ``required`` may do."""
        return _RANK[self] >= _RANK[required]


_RANK: Final = {Role.READER: 0, Role.WRITER: 1, Role.ADMIN: 2}


class ApiKey(BaseModel):
    """The stored record of a key (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    id: str = ""
    tenant: str
    role: Role
    name: str | None = None
    created_at: datetime


def hash_key(key: str) -> str:
    """SHA-256 hex of a key; keys are 256-bit random, so a plain hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name.

    Raises:
        InvalidInput: it is not.
    """
    if not _TENANT.fullmatch(tenant):
        raise InvalidInput(f"invalid tenant name {tenant!r}: must match {TENANT_NAME_PATTERN}")
    return tenant


def _record(tenant: str, role: Role, name: str | None) -> ApiKey:
    return ApiKey(id=ID_PREFIX + secrets.token_hex(8), tenant=tenant, role=role, name=name, created_at=clock.now())


def _decode(raw: bytes | str | None, key_hash: str) -> ApiKey | None:
    if not raw:
        return None
    record = ApiKey.model_validate_json(raw)
    # Records written before keys had public ids get a stable one derived from the hash.
    return record if record.id else record.model_copy(update={"id": ID_PREFIX + key_hash[:16]})


def store(client: redis.Redis, key: str, tenant: str, role: Role = Role.ADMIN, *, name: str | None = None) -> ApiKey:
    """Register ``key`` for ``tenant`` (blocking client: CLI and start-up)."""
    record = _record(check_tenant(tenant), role, name)
    key_hash = hash_key(key)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.api_key(key_hash), record.model_dump_json())
        pipe.hset(keys.api_key_ids(), record.id, key_hash)
        pipe.sadd(keys.tenants(), tenant)
        pipe.execute()
    return record


def create(client: redis.Redis, tenant: str, role: Role, *, name: str | None = None) -> tuple[str, ApiKey]:
    """A new key for ``tenant`` and its record; the key is returned only here (blocking client)."""
    key = new_key()
    return key, store(client, key, tenant, role, name=name)


async def acreate(client: aioredis.Redis, tenant: str, role: Role, *, name: str | None = None) -> tuple[str, ApiKey]:
    """A new key for ``tenant`` and its record; the key is returned only here."""
    key = new_key()
    record = _record(check_tenant(tenant), role, name)
    key_hash = hash_key(key)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.api_key(key_hash), record.model_dump_json())
        pipe.hset(keys.api_key_ids(), record.id, key_hash)
        pipe.sadd(keys.tenants(), tenant)
        await pipe.execute()
    return key, record


def get(client: redis.Redis, key: str) -> ApiKey | None:
    """The record of a presented key, or None when it is unknown (blocking client)."""
    key_hash = hash_key(key)
    return _decode(client.get(keys.api_key(key_hash)), key_hash)


async def lookup(client: aioredis.Redis, key: str) -> ApiKey | None:
    """The record of a presented key, or None when it is unknown."""
    key_hash = hash_key(key)
    return _decode(await client.get(keys.api_key(key_hash)), key_hash)


def _listed(hashes: Iterable[bytes | str], raws: Iterable[bytes | str | None], tenant: str | None) -> list[ApiKey]:
    found = [_decode(raw, keys.text(h)) for h, raw in zip(hashes, raws, strict=True)]
    return sorted(
        (r for r in found if r is not None and (tenant is None or r.tenant == tenant)),
        key=lambda r: (r.created_at, r.id),
    )


def list_keys(client: redis.Redis, tenant: str | None = None) -> list[ApiKey]:
    """Every key's record (optionally one tenant's), oldest first (blocking client)."""
    hashes = list(client.hvals(keys.api_key_ids()))
    raws = client.mget([keys.api_key(keys.text(h)) for h in hashes]) if hashes else []
    return _listed(hashes, raws, tenant)


async def alist_keys(client: aioredis.Redis, tenant: str | None = None) -> list[ApiKey]:
    """Every key's record (optionally one tenant's), oldest first."""
    hashes = list(await client.hvals(keys.api_key_ids()))
    raws = await client.mget([keys.api_key(keys.text(h)) for h in hashes]) if hashes else []
    return _listed(hashes, raws, tenant)


async def aget_by_id(client: aioredis.Redis, key_id: str) -> ApiKey | None:
    """A key's record by its public id, or None."""
    key_hash = await client.hget(keys.api_key_ids(), key_id)
    if key_hash is None:
        return None
    return _decode(await client.get(keys.api_key(keys.text(key_hash))), keys.text(key_hash))


def revoke(client: redis.Redis, key_id: str) -> bool:
    """Revoke a key by its public id: it stops working at once; False if there is no such key (blocking)."""
    key_hash = client.hget(keys.api_key_ids(), key_id)
    if key_hash is None:
        return False
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.api_key(keys.text(key_hash)))
        pipe.hdel(keys.api_key_ids(), key_id)
        pipe.execute()
    return True


async def arevoke(client: aioredis.Redis, key_id: str) -> bool:
    """Revoke a key by its public id: it stops working at once; False if there is no such key."""
    key_hash = await client.hget(keys.api_key_ids(), key_id)
    if key_hash is None:
        return False
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.api_key(keys.text(key_hash)))
        pipe.hdel(keys.api_key_ids(), key_id)
        await pipe.execute()
    return True


def indexed(client: redis.Redis, key: str) -> bool:
    """Whether ``key`` is registered with a public id (keys registered before ids existed are not)."""
    record = get(client, key)
    return record is not None and client.hget(keys.api_key_ids(), record.id) is not None
