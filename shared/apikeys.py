"""API keys: random secrets shown once, stored only as SHA-256 hashes with their tenant and role."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shared import keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

KEY_PREFIX = "sf_"


class Role(StrEnum):
    """What a key may do."""

    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"


class ApiKey(BaseModel):
    """The stored record of a key (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    role: Role
    created_at: datetime


def hash_key(key: str) -> str:
    """SHA-256 hex of a key; keys are 256-bit random, so a plain hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def store(client: redis.Redis, key: str, tenant: str, role: Role = Role.ADMIN) -> ApiKey:
    """Register ``key`` for ``tenant`` (blocking client: CLI and start-up)."""
    record = ApiKey(tenant=tenant, role=role, created_at=datetime.now(UTC))
    client.set(keys.api_key(hash_key(key)), record.model_dump_json())
    client.sadd(keys.tenants(), tenant)
    return record


async def lookup(client: aioredis.Redis, key: str) -> ApiKey | None:
    """The record of a presented key, or None when it is unknown."""
    raw = await client.get(keys.api_key(hash_key(key)))
    return ApiKey.model_validate_json(raw) if raw else None
