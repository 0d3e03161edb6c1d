"""Names and magic numbers used across services, each with the reason for its value."""

from __future__ import annotations

from typing import Final

# all-MiniLM-L6-v2 produces 384-dimensional sentence vectors.
EMBEDDING_DIM: Final = 384

# Request limits from the public API contract: big enough for bulk loads, small enough that one
# request never holds a worker or the gateway's memory for long.
MAX_DOCUMENTS_PER_REQUEST: Final = 1_000
MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024
MAX_SEARCH_K: Final = 100
MAX_ID_LENGTH: Final = 256
MAX_TEXT_CHARS: Final = 100_000

# Collection and document identifiers appear in object keys and URLs, so keep them to a safe alphabet.
COLLECTION_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TENANT_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# Dramatiq's Redis consumer sleeps up to this long between polls of an empty queue; it bounds the
# latency each hop (gateway -> embedder -> indexer) adds on an idle stack. 100 ms costs ~10 cheap
# Redis calls a second per worker.
WORKER_POLL_MS: Final = 100

# Events are kept long enough for a consumer that was down for a while to catch up; trimming is
# approximate (MAXLEN ~) so Redis trims whole macro-nodes cheaply.
STREAM_MAXLEN: Final = 100_000

# How long the indexer may hold a collection's lock; renewed by nobody, so it must exceed the
# slowest publish (segment write + manifest write) by a wide margin.
COLLECTION_LOCK_TTL_S: Final = 120

# A heartbeat key lives this long; services refresh it at a third of that.
HEARTBEAT_TTL_S: Final = 15

# Finished job records are kept a week so clients can still ask about them.
JOB_RETENTION_S: Final = 7 * 24 * 3600

# An Idempotency-Key's answer is kept a day: long enough for any client's retries (including ones
# after an overnight outage), short enough that the stored bodies stay a small share of Redis.
IDEMPOTENCY_TTL_S: Final = 24 * 3600

# A claimed key whose request has not finished frees itself after this long, so a gateway that died
# mid-request does not block the key for a day; it must exceed the slowest write (a 10 MB batch to S3).
IDEMPOTENCY_LOCK_TTL_S: Final = 60

# Dead letters wait a month for someone to look at them (Dramatiq's own drop theirs after a week).
DEAD_LETTER_RETENTION_S: Final = 30 * 24 * 3600

DEV_TENANT: Final = "dev"
