"""A tenant's profile: the settings that belong to the tenant rather than to one of its keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from shared import keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

# Deliberately loose (RFC 5321 allows far more than any pattern checks well): one @, no spaces or
# control characters, a dot in the domain. Whether the address works is the mail server's answer.
# The characters are listed rather than written ``\s``: the OpenAPI document's ECMA-262 regex, the
# API's pydantic (Rust) regex and Python's ``re`` each read ``\s`` as a different set.
_ADDRESS_CHAR: Final = r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
EMAIL_PATTERN: Final = rf"^{_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+$"
MAX_EMAIL_LENGTH: Final = 254
_EMAIL: Final = re.compile(EMAIL_PATTERN)


def valid_email(address: str) -> bool:
    """Whether ``address`` looks like a mail address."""
    # fullmatch: Python's ``$`` would also match before a final newline, which the API's regex does not.
    return len(address) <= MAX_EMAIL_LENGTH and _EMAIL.fullmatch(address) is not None


class TenantProfile(BaseModel):
    """What a tenant has set about itself."""

    model_config = ConfigDict(frozen=True)

    name: str
    contact_email: str | None = None


async def get(client: aioredis.Redis, tenant: str) -> TenantProfile:
    """The tenant's profile (empty fields when it never set any)."""
    raw = await client.hget(keys.tenant_profile(tenant), "contact_email")
    return TenantProfile(name=tenant, contact_email=keys.text(raw) if raw else None)


def contact(client: redis.Redis, tenant: str) -> str | None:
    """The tenant's contact address from a blocking client, or None."""
    raw = client.hget(keys.tenant_profile(tenant), "contact_email")
    return keys.text(raw) if raw else None


async def set_contact(client: aioredis.Redis, tenant: str, address: str | None) -> TenantProfile:
    """Set (or, with None, remove) the address notification mails go to."""
    if address is None:
        await client.hdel(keys.tenant_profile(tenant), "contact_email")
    else:
        await client.hset(keys.tenant_profile(tenant), "contact_email", address)
    return await get(client, tenant)
