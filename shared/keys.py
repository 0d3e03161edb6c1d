"""Every Redis key and stream name semaflow uses, in one place."""

from __future__ import annotations

import hashlib
from typing import Final

PREFIX: Final = "semaflow"

# One stream carries every event; consumers filter by type. A single stream keeps ordering simple and
# lets a new consumer group (notifier, audit) see everything from one position.
EVENTS_STREAM: Final = f"{PREFIX}:events"

# Sorted set endpoint id -> when its deliveries next need looking at (a delivery falls due, or a
# lease runs out): the notifier's dispatcher reads it instead of scanning every endpoint.
WEBHOOK_SCHEDULE: Final = f"{PREFIX}:wh:schedule"
# Pub/sub channel on which whoever makes deliveries due outside a notifier (a test event, a retry or
# replay asked for over the API, an endpoint enabled again) tells the dispatchers to read the schedule now.
WEBHOOK_WAKE: Final = f"{PREFIX}:wh:wake"


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


def docmap_next(tenant: str, collection: str) -> str:
    """Hash: the document map a rollback writes in chunks before swapping it in whole."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:docmap:next"


def segment_moves(tenant: str, collection: str) -> str:
    """Hash segment id -> the segment compaction merged it into.

    Document-map entries keep naming the segment a document was written to; a reader follows this
    hash to the segment holding it now, so a merge never rewrites the entries of what it merged.
    """
    return f"{PREFIX}:t:{tenant}:c:{collection}:moves"


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


def heartbeats() -> str:
    """Sorted set ``{service}:{instance}`` -> when that process's heartbeat runs out (ms): live processes are
    counted from it without scanning the keyspace."""
    return f"{PREFIX}:hb-index"


def heartbeat_pattern(service: str = "*") -> str:
    """SCAN pattern matching heartbeats of one service (or all)."""
    return f"{PREFIX}:hb:{service}:*"


# --- scheduler and maintenance ----------------------------------------------------------------


def scheduler_lease() -> str:
    """String ``'{owner} {token}'`` with a TTL: the scheduler replica that may fire, and its fencing token."""
    return f"{PREFIX}:scheduler:lease"


def scheduler_fence() -> str:
    """Counter incremented at every lease acquisition: the fencing tokens, strictly increasing."""
    return f"{PREFIX}:scheduler:fence"


def schedule_triggers() -> str:
    """List of schedule names an operator asked to fire now (consumed by the leader)."""
    return f"{PREFIX}:scheduler:triggers"


def schedule(name: str) -> str:
    """Hash of a schedule's state: cursor (last tick handled), last run, its outcome, paused."""
    return f"{PREFIX}:schedule:{name}"


def compaction_queued(tenant: str, collection: str) -> str:
    """Set while a compaction of the collection is queued, so publishes queue at most one."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:compaction-queued"


def collection_stats(tenant: str, collection: str) -> str:
    """JSON of a collection's index statistics, written by the statistics actor."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:stats"


def removed_versions(tenant: str, collection: str) -> str:
    """Sorted set version -> time (ms) cleanup removed that manifest (so a rollback to it answers 409, not 404)."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:removed"


def write_floor(tenant: str, collection: str) -> str:
    """The write sequence of the collection's last rollback: writes accepted before it have no effect."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:floor"


def tenant_profile(tenant: str) -> str:
    """Hash of a tenant's settings (its contact address)."""
    return f"{PREFIX}:tenant:{tenant}"


def webhook(endpoint_id: str) -> str:
    """Hash holding a webhook endpoint."""
    return f"{PREFIX}:wh:{endpoint_id}"


def tenant_webhooks(tenant: str) -> str:
    """Sorted set endpoint id -> creation time (ms) of a tenant's webhook endpoints."""
    return f"{PREFIX}:t:{tenant}:webhooks"


def webhook_due(endpoint_id: str) -> str:
    """Sorted set delivery id -> time (ms) its next attempt may start, for deliveries waiting on an endpoint."""
    return f"{PREFIX}:wh:{endpoint_id}:due"


def webhook_in_flight(endpoint_id: str) -> str:
    """Sorted set delivery id -> lease expiry (ms) of an endpoint's attempts under way."""
    return f"{PREFIX}:wh:{endpoint_id}:inflight"


def webhook_log(endpoint_id: str) -> str:
    """Sorted set delivery id -> creation time (ms): an endpoint's delivery log."""
    return f"{PREFIX}:wh:{endpoint_id}:log"


def delivery(delivery_id: str) -> str:
    """Hash holding one webhook delivery (one event to one endpoint)."""
    return f"{PREFIX}:dlv:{delivery_id}"


def delivery_attempts(delivery_id: str) -> str:
    """List of a delivery's attempts (JSON), oldest first."""
    return f"{PREFIX}:dlv:{delivery_id}:attempts"


def webhook_message(event_id: str) -> str:
    """String: the exact body delivered for an event (its CloudEvents JSON)."""
    return f"{PREFIX}:whmsg:{event_id}"


def tenant_messages(tenant: str) -> str:
    """Sorted set event id -> time (ms) of a tenant's events that were sent to webhooks (for replay)."""
    return f"{PREFIX}:t:{tenant}:whmsgs"


def event_seen(group: str, event_id: str) -> str:
    """Marker that consumer group ``group`` acted on an event once (mail, counters)."""
    return f"{PREFIX}:seen:{group}:{event_id}"


def email_quota(tenant: str, hour: int) -> str:
    """Counter of notification mails sent to a tenant in one hour (hours since the epoch)."""
    return f"{PREFIX}:t:{tenant}:mails:{hour}"


def digest_counts(tenant: str, week: str) -> str:
    """Hash of a tenant's counts for one ISO week (``2026-W47``): the weekly digest's figures."""
    return f"{PREFIX}:t:{tenant}:digest:{week}"


def digest_sent(tenant: str, week: str) -> str:
    """Marker that a tenant's digest for ``week`` went out (so a repeated firing sends nothing)."""
    return f"{PREFIX}:t:{tenant}:digest:{week}:sent"


def api_key_ids() -> str:
    """Hash public key id -> SHA-256 of the key: lists and revokes keys without ever holding one."""
    return f"{PREFIX}:apikeys"


def rate_limit_overrides(tenant: str) -> str:
    """Hash limit name (``per_hour`` ...) -> a tenant's own quota, overriding the settings' default."""
    return f"{PREFIX}:t:{tenant}:ratelimits"


def rate_limit_counter(key_id: str, policy: str) -> str:
    """Hash ``s`` (window start, s) and ``n`` (requests counted) of one key's rate-limit window."""
    return f"{PREFIX}:rl:{key_id}:{policy}"


def search_cache(tenant: str, collection: str, entry: str) -> str:
    """A cached search answer of a collection (``entry`` names the collection id, index version and query)."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:search:{entry}"


def search_cache_pattern(tenant: str, collection: str) -> str:
    """SCAN pattern matching every cached search answer of a collection."""
    return f"{PREFIX}:t:{tenant}:c:{collection}:search:*"


def activity(kind: str, minute: int) -> str:
    """Counter of one kind of finished work (documents embedded, webhook attempts) in one UTC minute."""
    return f"{PREFIX}:activity:{kind}:{minute}"


# --- the work queues (see shared.messaging.workqueue) --------------------------------------------------------
# Lua callers get a key with a variable part as a template: ``wq_age(queue, LEVEL)`` gives the
# template of every level's key, the script putting the level in place of ``{level}``.
LEVEL: Final = "{level}"
TENANT: Final = "{tenant}"


def _wq(queue: str, *parts: str) -> str:
    return ":".join((PREFIX, "wq", queue, *parts))


def wq_entries(queue: str) -> str:
    """Hash entry id -> entry JSON (waiting or claimed)."""
    return _wq(queue, "entries")


def wq_claims(queue: str) -> str:
    """Hash token message id -> claimed entry id (work in flight)."""
    return _wq(queue, "claims")


def wq_leases(queue: str) -> str:
    """Sorted set token message id -> lease deadline (ms) of each claim; its worker renews it while it works."""
    return _wq(queue, "leases")


def wq_attempts(queue: str) -> str:
    """Hash entry id -> attempts started (every claim of the entry, a redelivered or reclaimed one too)."""
    return _wq(queue, "attempts")


def wq_age(queue: str, level: int | str) -> str:
    """Sorted set entry id -> enqueue time (ms) of the entries waiting at ``level``."""
    return _wq(queue, "age", str(level))


def wq_ring(queue: str, level: int | str) -> str:
    """List of tenants with entries waiting at ``level``, in turn order."""
    return _wq(queue, "ring", str(level))


def wq_tenant(queue: str, level: int | str, tenant: str) -> str:
    """List of one tenant's waiting entry ids at ``level`` (FIFO)."""
    return _wq(queue, "t", str(level), tenant)


def wq_claimed(queue: str) -> str:
    """Claims made so far (drives the anti-starvation turn)."""
    return _wq(queue, "claimed")


def wq_done(queue: str, bucket: int) -> str:
    """Counter of the entries (or webhook attempts, for ``notify``) finished in one 10-second bucket."""
    return _wq(queue, "done", str(bucket))


# --- Dramatiq's own keys (its Redis broker's layout, pinned by tests/integration/contracts) ------
# Dramatiq keys live beside semaflow's under one prefix, so one Redis can be inspected at a glance.
DRAMATIQ_NAMESPACE: Final = "semaflow-dq"


def dramatiq_queues(queue: str) -> tuple[str, str]:
    """Dramatiq's lists of ``queue``: ready messages, and delayed ones (retries in back-off)."""
    return f"{DRAMATIQ_NAMESPACE}:{queue}", f"{DRAMATIQ_NAMESPACE}:{queue}.DQ"


def dramatiq_messages(queue: str) -> str:
    """Dramatiq's hash of ``queue``'s stored messages: queued, or fetched and not yet acknowledged."""
    return f"{dramatiq_queues(queue)[0]}.msgs"


def dramatiq_acks(queue: str) -> tuple[str, str]:
    """SCAN patterns of Dramatiq's per-worker sets of fetched, unacknowledged messages: ready, delayed."""
    return f"{DRAMATIQ_NAMESPACE}:__acks__.*.{queue}", f"{DRAMATIQ_NAMESPACE}:__acks__.*.{queue}.DQ"


def dramatiq_delay_acks(worker_id: str, queue: str) -> str:
    """Dramatiq's set of the delayed messages of ``queue`` that worker ``worker_id`` holds (``dramatiq_acks``'s
    second pattern, for one worker)."""
    return f"{DRAMATIQ_NAMESPACE}:__acks__.{worker_id}.{queue}.DQ"


def dramatiq_wake(queue: str) -> str:
    """The pub/sub channel each send to ``queue`` (a queue, or its ``.DQ`` delay queue) is announced on, for its
    idle consumers (semaflow's, not Dramatiq's: see ``shared.runtime.broker``)."""
    return f"{DRAMATIQ_NAMESPACE}:wake:{queue}"


def dramatiq_heartbeats() -> str:
    """Dramatiq's sorted set worker id -> its last broker command (ms): a worker silent too long is dead."""
    return f"{DRAMATIQ_NAMESPACE}:__heartbeats__"


def dramatiq_ack_owner(ack_key: str | bytes) -> str:
    """The worker id in the name of one of Dramatiq's acknowledgement sets (``…:__acks__.{worker}.{queue}``)."""
    name = text(ack_key)
    return name[len(f"{DRAMATIQ_NAMESPACE}:__acks__.") :].split(".", 1)[0]
