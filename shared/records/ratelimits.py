"""Rate-limit policies per API key: the windows each kind of request draws on, and per-tenant quotas.

Every request of a key falls in one category. Single and bulk operations draw on their own
per-minute window and on the key's overall hour and day windows; searches draw only on the search
windows, and reads (job and queue status: what a client polls) only on the read windows. A quota
comes from the settings unless the key's tenant has its own, stored in Redis (``semaflow limits
set`` or ``PUT /v1/tenants/{tenant}/rate-limits``). A quota of 0 means no limit on that window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared import keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from shared.config import Settings

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86_400


class Category(StrEnum):
    """What kind of request draws on a key's budget."""

    SINGLE = "single"
    BULK = "bulk"
    SEARCH = "search"
    READ = "read"


@dataclass(frozen=True)
class Window:
    """One rate-limit window: its policy name (as the headers show it), quota field and length."""

    policy: str
    field: str
    seconds: int


DAY_WINDOW: Final = Window("day", "per_day", DAY)
HOUR_WINDOW: Final = Window("hour", "per_hour", HOUR)
WINDOWS: Final[dict[Category, tuple[Window, ...]]] = {
    Category.SINGLE: (Window("single-minute", "single_per_minute", MINUTE), HOUR_WINDOW, DAY_WINDOW),
    Category.BULK: (Window("bulk-minute", "bulk_per_minute", MINUTE), HOUR_WINDOW, DAY_WINDOW),
    Category.SEARCH: (
        Window("search-minute", "search_per_minute", MINUTE),
        Window("search-hour", "search_per_hour", HOUR),
        Window("search-day", "search_per_day", DAY),
    ),
    Category.READ: (Window("read-minute", "read_per_minute", MINUTE), Window("read-hour", "read_per_hour", HOUR)),
}


class Quotas(BaseModel):
    """A quota per window field (requests per window; 0: no limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_day: int = Field(ge=0, strict=True)
    per_hour: int = Field(ge=0, strict=True)
    bulk_per_minute: int = Field(ge=0, strict=True)
    single_per_minute: int = Field(ge=0, strict=True)
    search_per_minute: int = Field(ge=0, strict=True)
    search_per_hour: int = Field(ge=0, strict=True)
    search_per_day: int = Field(ge=0, strict=True)
    read_per_minute: int = Field(ge=0, strict=True)
    read_per_hour: int = Field(ge=0, strict=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        """The defaults every tenant gets unless it has its own."""
        return cls(
            per_day=settings.rate_limit_per_day,
            per_hour=settings.rate_limit_per_hour,
            bulk_per_minute=settings.rate_limit_bulk_per_minute,
            single_per_minute=settings.rate_limit_single_per_minute,
            search_per_minute=settings.rate_limit_search_per_minute,
            search_per_hour=settings.rate_limit_search_per_hour,
            search_per_day=settings.rate_limit_search_per_day,
            read_per_minute=settings.rate_limit_read_per_minute,
            read_per_hour=settings.rate_limit_read_per_hour,
        )

    def quota(self, field: str) -> int:
        """The quota of a window field."""
        return int(getattr(self, field))


FIELDS: Final = tuple(Quotas.model_fields)


def _whole(value: object) -> object:
    """A whole JSON number as an int: JSON Schema counts 85.0 as the integer 85, and so does the API."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A quota: a whole number (strict: no numeric strings, no 85.5), 0 or more.
_Quota = Annotated[int | None, BeforeValidator(_whole)]


class QuotaOverrides(BaseModel):
    """A tenant's own quotas; a field left out keeps its current value, ``null`` returns it to the default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_day: _Quota = Field(default=None, ge=0, strict=True)
    per_hour: _Quota = Field(default=None, ge=0, strict=True)
    bulk_per_minute: _Quota = Field(default=None, ge=0, strict=True)
    single_per_minute: _Quota = Field(default=None, ge=0, strict=True)
    search_per_minute: _Quota = Field(default=None, ge=0, strict=True)
    search_per_hour: _Quota = Field(default=None, ge=0, strict=True)
    search_per_day: _Quota = Field(default=None, ge=0, strict=True)
    read_per_minute: _Quota = Field(default=None, ge=0, strict=True)
    read_per_hour: _Quota = Field(default=None, ge=0, strict=True)


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    return {keys.text(k): int(keys.text(v)) for k, v in raw.items() if keys.text(k) in FIELDS}


def _split(changes: QuotaOverrides) -> tuple[dict[str, int], list[str]]:
    """The fields to set and the fields to remove (sent as null)."""
    sent = changes.model_dump(exclude_unset=True)
    return {k: v for k, v in sent.items() if v is not None}, [k for k, v in sent.items() if v is None]


def overrides(client: redis.Redis, tenant: str) -> dict[str, int]:
    """A tenant's own quotas (blocking client)."""
    return _decode(client.hgetall(keys.rate_limit_overrides(tenant)))


async def aoverrides(client: aioredis.Redis, tenant: str) -> dict[str, int]:
    """A tenant's own quotas."""
    return _decode(await client.hgetall(keys.rate_limit_overrides(tenant)))


def update(client: redis.Redis, tenant: str, changes: QuotaOverrides) -> dict[str, int]:
    """Apply ``changes`` to a tenant's own quotas; returns them (blocking client)."""
    put, drop = _split(changes)
    key = keys.rate_limit_overrides(tenant)
    if put:
        client.hset(key, mapping=put)  # type: ignore[arg-type]
    if drop:
        client.hdel(key, *drop)
    return overrides(client, tenant)


async def aupdate(client: aioredis.Redis, tenant: str, changes: QuotaOverrides) -> dict[str, int]:
    """Apply ``changes`` to a tenant's own quotas; returns them."""
    put, drop = _split(changes)
    key = keys.rate_limit_overrides(tenant)
    if put:
        await client.hset(key, mapping=put)  # type: ignore[arg-type]
    if drop:
        await client.hdel(key, *drop)
    return await aoverrides(client, tenant)


def unlimited(client: redis.Redis, tenant: str) -> bool:
    """Give a tenant no limit on any window (every quota 0), unless it has quotas of its own already;
    returns whether it did (blocking client)."""
    key = keys.rate_limit_overrides(tenant)
    if client.exists(key):
        return False
    client.hset(key, mapping=dict.fromkeys(FIELDS, 0))
    return True


def effective(defaults: Quotas, own: dict[str, int]) -> Quotas:
    """The quotas in force for a tenant."""
    return defaults.model_copy(update=own)
