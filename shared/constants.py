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
# A search that finds a newer version published than the one loaded waits this long for it, so a
# job that reports success is searchable at once; a bigger load than that answers from the old one.
SEARCH_FRESHNESS_WAIT_S: Final = 2.0

# Niceness of the services doing background work (0-19; the gateway stays at 0): on a host whose cores are
# all busy with ingest, searches get a core first. bench/scale.py's search while batches publish, 100,000
# clustered vectors, alternating runs with the second tier approximate too: 1.34-1.53x idle against
# 1.97-3.48x before (docs/benchmarks.md).
BACKGROUND_NICE: Final = 10

# While Redis cannot be reached, the gateway still answers searches for keys it verified this recently:
# long enough to ride out a failover, short enough that a key revoked elsewhere soon stops working.
KEY_CACHE_TTL_S: Final = 60.0
# A request-path Redis command (connect or reply) that takes longer counts as Redis being unavailable;
# a healthy Redis answers in milliseconds, and a search must not hang on a dead one.
GATEWAY_REDIS_TIMEOUT_S: Final = 2.0
# What a 503 for an unreachable Redis asks the client to wait: a failover or restart takes seconds.
REDIS_RETRY_AFTER_S: Final = 5
MAX_ID_LENGTH: Final = 256
# Listing a collection's documents: a page as big as one ingest request by default, ten times that at most
# (each item is an id and its metadata; a page is sliced from sorted rows, so its cost is its length).
DOCUMENT_PAGE_DEFAULT: Final = 100
DOCUMENT_PAGE_MAX: Final = 1_000
MAX_TEXT_CHARS: Final = 100_000

# Collection and document identifiers appear in object keys and URLs, so keep them to a safe alphabet.
COLLECTION_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TENANT_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# While a worker holds messages of a queue (running, or delayed until their time), it polls the queue
# again after at most this long (Dramatiq's Redis consumer's own poll, ~13 Redis calls a second).
WORKER_POLL_MS: Final = 100
# A worker that holds none fetches only when a send is announced (see shared.runtime.broker) or this often:
# on an idle stack, Dramatiq's 100 ms polls of every queue and delay queue were most of its CPU (0.12 of a
# core), and a send no longer waits a poll to be seen. The fallback finds what no send announced.
WORKER_IDLE_WAIT_MS: Final = 1_000
# The maintenance queue's: its work runs for seconds to minutes, and nobody waits on it.
MAINTENANCE_POLL_MS: Final = 1_000

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
# mid-request does not block the key for long; the request renews it every third of this while it runs.
IDEMPOTENCY_LOCK_TTL_S: Final = 10

# Dead letters wait a month for someone to look at them (Dramatiq's own drop theirs after a week).
DEAD_LETTER_RETENTION_S: Final = 30 * 24 * 3600

# An endpoint that has not had a single successful delivery for five days is presumed abandoned;
# it is disabled (and its tenant told) rather than retried forever.
WEBHOOK_DISABLE_AFTER_S: Final = 5 * 24 * 3600
# A failing endpoint keeps two attempts in flight (a probe and a retry) instead of its full share, so
# hundreds of dead endpoints, not twenty, would be needed to fill a notifier's in-flight slots.
WEBHOOK_FAILING_ENDPOINT_CONCURRENCY: Final = 2

# Deliveries, their attempts and the messages they carry stay listable and replayable for two weeks:
# long enough to recover from an outage noticed after a weekend, short enough to bound Redis memory.
WEBHOOK_LOG_RETENTION_S: Final = 14 * 24 * 3600

# After a secret is rotated the old one keeps signing for a day, so receivers can roll out the new one.
WEBHOOK_SECRET_GRACE_S: Final = 24 * 3600

# A receiver's Retry-After is honoured up to a day; beyond that it is more likely a misconfiguration.
WEBHOOK_RETRY_AFTER_MAX_S: Final = 24 * 3600

# The delivery log keeps the first kilobyte of each response: enough to read an error message.
WEBHOOK_RESPONSE_LOG_BYTES: Final = 1024

# A tenant's endpoints are matched against every one of its events: bound the fan-out.
MAX_WEBHOOKS_PER_TENANT: Final = 100

DEV_TENANT: Final = "dev"

# --- scheduler and maintenance ----------------------------------------------------------------

# A manifest version: zero-padded sequence, then the first 16 hex digits of its SHA-256.
VERSION_PATTERN: Final = r"^[0-9]{10}-[0-9a-f]{16}$"

# Schedule names appear in URLs and Redis keys.
SCHEDULE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# The scheduler lease lives 10 s and its holder renews it every third of that: a dead leader is
# replaced within TTL + one follower poll (~11 s, inside the 15 s promised), while a leader must miss
# two renewals in a row (a Redis blip) before it loses office.
SCHEDULER_LEASE_TTL_S: Final = 10.0

# Followers try to take the lease, and the leader looks for manual triggers, this often.
SCHEDULER_POLL_S: Final = 0.5

# A leader that fell behind fires at most this many overdue ticks of one schedule in one pass (a
# per-second schedule after a long stall); older ones are handled as missed.
MAX_TICKS_PER_PASS: Final = 100

# Segments merge by size tiers (an LSM tree's size-ratio merging): tier t holds segments of
# 1,000 x 10^t up to 1,000 x 10^(t+1) live vectors (a batch makes one segment of at most 1,000
# documents, so batches start in tier 0), and ten segments of one tier merge into one of the next.
# A collection keeps at most nine segments per tier (~40 at a billion vectors), each vector is
# rewritten once per tier it climbs, and a merge reads ten segments of one tier, never the whole.
COMPACTION_TIER_BASE_VECTORS: Final = 1_000
COMPACTION_MERGE_FACTOR: Final = 10
# Segments this large are not merged further: one merge of 2,000,000 x 384 floats holds ~3 GB of
# vectors plus its index, which bounds a merge's memory and time.
COMPACTION_MAX_SEGMENT_VECTORS: Final = 2_000_000

# A segment whose tombstoned share reaches this is rewritten without them.
COMPACTION_DELETED_RATIO: Final = 0.2

# Tombstones a manifest may list before its most tombstoned segment is rewritten (about 30 bytes each:
# a manifest stays under about 300 kB however many documents are deleted).
COMPACTION_MAX_TOMBSTONES: Final = 10_000

# From this many live vectors a merged segment is approximate instead of a flat scan. An exact scan
# costs ~0.066 ms per query per 1,000 x 384 floats on one core: 0.66 ms for a 10,000-vector segment of
# the tier above the smallest, where an IVF one of clustered vectors takes 0.03 ms. At 50,000, a
# collection growing past 100,000 scanned up to nine flat 10,000-vector segments: 2.7 -> 12.6 ms per
# search in bench/scale.py's growth, 3-4 ms at 5,000. Checked for recall like any approximate segment,
# so data that does not cluster is still built flat.
APPROXIMATE_THRESHOLD: Final = 5_000

# Which approximate index large segments get, chosen by bench/compaction.py --kinds (docs/benchmarks.md):
# at 100,000 clustered vectors IVF-Flat built 2.4-9x faster than HNSW (M=32, efConstruction 200) at the
# same checked recall (>= 0.95) and the same query time; on random vectors neither reached 0.95.
APPROXIMATE_KIND: Final = "ivf"

# Every approximate segment must reach this recall@10 against exact search over its own vectors
# (checked at build), else it is built exact.
MIN_RECALL: Final = 0.95

# HNSW parameters: M=32 links per node, efConstruction=200. efSearch is chosen per segment at build
# (the smallest of 16, 32, ... reaching MIN_RECALL) up to this cap; random-like vectors need more
# than any cap that keeps the graph faster than a scan, and are built flat.
HNSW_M: Final = 32
HNSW_EF_CONSTRUCTION: Final = 200
HNSW_EF_SEARCH: Final = 512

# One run of a task may take this long before Dramatiq interrupts it (a failed attempt, retried):
# embedding or indexing one batch takes seconds, so a run this long is stuck, not busy.
TASK_TIME_LIMIT_S: Final = 15 * 60

# Compaction walks every collection and may build HNSW graphs over hundreds of thousands of vectors
# (a full rebuild: over every vector of a collection), which takes tens of minutes on a few cores.
COMPACTION_TIME_LIMIT_S: Final = 2 * 3600

# Cleanup lists and deletes objects of every collection: on S3, one request per 1,000 objects listed
# or deleted, so a large store takes minutes, and a slow one longer.
CLEANUP_TIME_LIMIT_S: Final = 3600

# Cleanup keeps every stored object a day (any version of the last day can be rolled back to) and
# the last 10 published manifests whatever their age; batches that a job can still retry are kept
# as long as that job. It runs hourly, so the segments a merge replaced are reclaimed within about
# a day instead of piling up under steady ingest.
CLEANUP_RETENTION_S: Final = 24 * 3600
CLEANUP_KEEP_MANIFESTS: Final = 10

# The gateway reads the statistics actor's results into its Prometheus gauges this often.
STATS_REFRESH_S: Final = 15.0

# Rate limits per API key (the public API contract's defaults; every one is a setting). Searches
# draw only on their own, larger budget so an interactive app is not starved by its own writes.
RATE_LIMIT_PER_DAY: Final = 1_000
RATE_LIMIT_PER_HOUR: Final = 100
RATE_LIMIT_BULK_PER_MINUTE: Final = 10
RATE_LIMIT_SINGLE_PER_MINUTE: Final = 30
RATE_LIMIT_SEARCH_PER_MINUTE: Final = 120
RATE_LIMIT_SEARCH_PER_HOUR: Final = 2_000
RATE_LIMIT_SEARCH_PER_DAY: Final = 10_000
# The longest a `GET /v1/jobs/{id}?wait=` long-poll waits for its job to change, and how often it looks.
MAX_JOB_WAIT_S: Final = 60
JOB_WAIT_POLL_S: Final = 0.25
# Records a filtered list request reads at most before it answers (a short or empty page with a cursor
# to go on): a filter that few records match never reads a whole tenant's history in one request.
LIST_SCAN_BUDGET: Final = 2000
# Reads (job and dead-letter status, queues): sized so a client polling every second never spends them.
RATE_LIMIT_READ_PER_MINUTE: Final = 600
RATE_LIMIT_READ_PER_HOUR: Final = 20_000

# JSON bodies nest a few levels (documents -> metadata); anything deeper is abuse, and Python's
# parser would recurse on it.
MAX_JSON_DEPTH: Final = 32
