"""Every Redis key and stream name semaflow uses, in one place."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "semaflow"

# One stream carries every event; consumers filter by type. A single stream keeps ordering simple and
# lets a new consumer group (notifier, audit) see everything from one position.
EVENTS_STREAM: Final = f"{PREFIX}:events"


def text(raw: bytes | str) -> str:
    """A value read back from Redis as text (clients may return bytes or str)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def api_key(key_hash: str) -> str:
    """Hash of an API key's record (tenant, role, created_at); keyed by the key's SHA-256."""
    return f"{PREFIX}:apikey:{key_hash}"


def tenants() -> str:
    """Set of known tenant names."""
    return f"{PREFIX}:tenants"


def collections(tenant: str) -> str:
    """Hash collection name -> JSON record of a tenant's collections."""
    return f"{PREFIX}:t:{tenant}:collections"


def latest(tenant: str, collection: str) -> str:
    """String: the collection's current manifest version (the pointer of record)."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:latest"


def docmap(tenant: str, collection: str) -> str:
    """Hash document id -> 'segment_id:write_seq' ('-' as segment for a delete)."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:docmap"


def write_seq(tenant: str, collection: str) -> str:
    """Counter that orders every accepted write (batch or delete) of a collection."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:seq"


def collection_lock(tenant: str, collection: str) -> str:
    """Lock held by the indexer while it publishes a collection's next manifest."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:lock"


def job(job_id: str) -> str:
    """String holding a job record as JSON."""
    return f"{PREFIX}:job:{job_id}"


def idempotency(tenant: str, key: str) -> str:
    """String: the job id first answered for an Idempotency-Key."""
    return f"{PREFIX}:t:{tenant}:idem:{key}"


def heartbeat(service: str, instance: str) -> str:
    """Short-lived key a live service process refreshes."""
    return f"{PREFIX}:hb:{service}:{instance}"


def heartbeat_pattern(service: str = "*") -> str:
    """SCAN pattern matching heartbeats of one service (or all)."""
    return f"{PREFIX}:hb:{service}:*"
