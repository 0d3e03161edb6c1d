"""Every Redis key and stream name semaflow uses, in one place."""

from __future__ import annotations

import hashlib
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
    """Hash holding a job record."""
    return f"{PREFIX}:job:{job_id}"


def tenant_jobs(tenant: str) -> str:
    """Sorted set job id -> creation time (ms) of a tenant's jobs."""
    return f"{PREFIX}:t:{tenant}:jobs"


def dead_letter(letter_id: str) -> str:
    """Hash holding one dead letter."""
    return f"{PREFIX}:dl:{letter_id}"


def dead_letters(tenant: str) -> str:
    """Sorted set dead-letter id -> time (ms) it died, per tenant."""
    return f"{PREFIX}:t:{tenant}:dead"


def dead_letters_by_queue(queue: str) -> str:
    """Sorted set dead-letter id -> time (ms) it died, per queue (queue statistics)."""
    return f"{PREFIX}:dlq:{queue}"


def idempotency(tenant: str, key: str) -> str:
    """Hash for an Idempotency-Key (named by its SHA-256): fingerprint, claim token, then the answer to replay."""
    return f"{PREFIX}:t:{tenant}:idem:{hashlib.sha256(key.encode()).hexdigest()}"


def heartbeat(service: str, instance: str) -> str:
    """Short-lived key a live service process refreshes."""
    return f"{PREFIX}:hb:{service}:{instance}"


def heartbeat_pattern(service: str = "*") -> str:
    """SCAN pattern matching heartbeats of one service (or all)."""
    return f"{PREFIX}:hb:{service}:*"
