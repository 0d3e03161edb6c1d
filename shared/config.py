"""Typed settings, read once from ``SEMAFLOW_*`` environment variables at a service's edge."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import constants as c
from shared.errors import ConfigurationError
from shared.records.schedules import Schedule, ScheduleConfig, configured
from shared.webhooks.destinations import AllowList
from shared.webhooks.retries import parse_delays


class Settings(BaseSettings):
    """Every setting of every service; each service reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="SEMAFLOW_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".semaflow"),
        description="Root of the embedded Redis data, the development key and the local store.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL; unset means `semaflow up` starts its own (AOF, appendfsync everysec)."
    )
    store_dir: Path | None = Field(default=None, description="Local object-store directory (default DATA_DIR/objects).")
    segment_cache_dir: Path | None = Field(
        default=None,
        description=(
            "Where the gateway keeps the segment files it memory-maps, each downloaded and verified once "
            "(default DATA_DIR/segment-cache). Gateways on one host that share it share the pages."
        ),
    )
    s3_bucket: str | None = Field(
        default=None, description="Use S3 (any S3 API) with this bucket instead of a directory."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (unset: AWS).")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key id (unset: boto3's usual credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key (unset: boto3's usual credential chain)."
    )
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")

    # --- gateway -----------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8080, description="Port the gateway listens on.")
    max_documents_per_request: int = Field(
        default=c.MAX_DOCUMENTS_PER_REQUEST, description="Most documents in one ingest request."
    )
    max_request_bytes: int = Field(default=c.MAX_REQUEST_BYTES, description="Largest request body, in bytes.")
    query_model_timeout_s: float = Field(
        default=120.0, description="How long a text search waits for the query model to load (then 503)."
    )
    query_batch_max: int = Field(
        default=32, description="Most query texts the gateway embeds in one model call (concurrent searches)."
    )
    query_batch_wait_ms: float = Field(
        default=2.0,
        description="How long a query text waits for others to share its model call (0: only those already queued).",
    )
    index_reconcile_interval_s: float = Field(
        default=30.0, description="How often the gateway re-checks every collection's LATEST."
    )
    ingest_body_processes: int = Field(
        default=1,
        ge=0,
        description=(
            "Worker processes per gateway that parse, validate and encode large ingest bodies outside its GIL, so"
            " searches do not wait behind them (0: the gateway's own body thread does it)."
        ),
    )
    background_nice: int = Field(
        default=c.BACKGROUND_NICE,
        ge=0,
        le=19,
        description=(
            "Niceness the embedder, indexer, notifier, scheduler and the gateway's ingest-body workers give"
            " themselves at start, so that on a host whose cores are all busy searches get a core first (0: the"
            " gateway's priority)."
        ),
    )
    search_workers: int = Field(default=0, description="Searches run at once per gateway (0: one per CPU core).")
    search_threads: int = Field(
        default=1, description="FAISS threads per search; concurrent requests already use every core."
    )
    gateway_collections: str = Field(
        default="*",
        description=(
            "The collections this gateway loads and searches: comma-separated shell patterns over"
            " `tenant/collection` (`*`: all). Gateways of one group share a value; searches and document reads of"
            " a collection another group serves answer 421 here (a load balancer routes them), writes work on any"
            " gateway. See docs/scaling.md."
        ),
    )
    search_freshness_wait_s: float = Field(
        default=c.SEARCH_FRESHNESS_WAIT_S,
        description="How long a search waits for a newer published version to load (0: answer from the loaded one).",
    )
    key_cache_ttl_s: float = Field(
        default=c.KEY_CACHE_TTL_S,
        ge=0,
        description=(
            "How long the gateway keeps honouring an API key it verified, for searches, while Redis cannot be "
            "reached (0: never). With Redis up every request checks its key there, so a revoked key stops at "
            "once; during an outage a key revoked on another replica works here for at most this long."
        ),
    )
    gateway_redis_timeout_s: float = Field(
        default=c.GATEWAY_REDIS_TIMEOUT_S,
        gt=0,
        description=(
            "How long the gateway waits for Redis to connect or answer one request's command before it "
            "treats Redis as unavailable (searches then answer from memory, writes 503)."
        ),
    )
    idempotency_ttl_s: int = Field(
        default=c.IDEMPOTENCY_TTL_S, description="How long the answer to an Idempotency-Key is replayed."
    )

    # --- gateway: exposure (keys, rate limits, cache, HTTP hygiene) ------------------------------
    rate_limit_enabled: bool = Field(
        default=True, description="Enforce per-key rate limits (false: none at all, and no rate-limit headers)."
    )
    rate_limit_per_day: int = Field(
        default=c.RATE_LIMIT_PER_DAY, description="Requests per key per day, searches excepted (0: none)."
    )
    rate_limit_per_hour: int = Field(
        default=c.RATE_LIMIT_PER_HOUR, description="Requests per key per hour, searches excepted (0: none)."
    )
    rate_limit_bulk_per_minute: int = Field(
        default=c.RATE_LIMIT_BULK_PER_MINUTE, description="Bulk ingests and bulk job operations per key per minute."
    )
    rate_limit_single_per_minute: int = Field(
        default=c.RATE_LIMIT_SINGLE_PER_MINUTE, description="Every other non-search request per key per minute."
    )
    rate_limit_search_per_minute: int = Field(
        default=c.RATE_LIMIT_SEARCH_PER_MINUTE, description="Searches per key per minute."
    )
    rate_limit_search_per_hour: int = Field(
        default=c.RATE_LIMIT_SEARCH_PER_HOUR, description="Searches per key per hour (0: none)."
    )
    rate_limit_search_per_day: int = Field(
        default=c.RATE_LIMIT_SEARCH_PER_DAY, description="Searches per key per day (0: none)."
    )
    rate_limit_read_per_minute: int = Field(
        default=c.RATE_LIMIT_READ_PER_MINUTE,
        description="Reads of documents, jobs, dead letters and queue status per key per minute (0: none).",
    )
    rate_limit_read_per_hour: int = Field(
        default=c.RATE_LIMIT_READ_PER_HOUR,
        description="Reads of documents, jobs, dead letters and queue status per key per hour (0: none).",
    )
    search_cache_enabled: bool = Field(
        default=True, description="The two-level search cache (L1 in each gateway process, L2 in Redis)."
    )
    search_cache_l1_ttl_s: float = Field(default=60.0, description="In-process search cache TTL (0: no L1).")
    search_cache_l1_max_entries: int = Field(default=4096, description="In-process search cache size (LRU).")
    search_cache_l2_ttl_s: int = Field(default=300, description="Redis search cache TTL (0: no L2).")
    max_json_depth: int = Field(
        default=c.MAX_JSON_DEPTH,
        description="Deepest nesting of arrays and objects accepted in a JSON body (deeper: 400).",
    )
    request_read_timeout_s: float = Field(
        default=30.0, description="A request body must arrive within this (else 408)."
    )
    idle_timeout_s: float = Field(
        default=30.0, description="Close a connection idle (or not sending a complete request head) this long."
    )
    cors_origins: str = Field(default="", description="Comma-separated origins allowed by CORS ('*': any; empty: off).")
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy addresses or networks whose X-Forwarded-Proto is believed (for HSTS).",
    )

    # --- embedding ---------------------------------------------------------------------------
    model_path: Path | None = Field(
        default=None, description="SentenceTransformer folder (default: the packaged model)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs: auto (CUDA when present), cpu or cuda."
    )
    embed_batch_size: int = Field(
        default=0,
        ge=0,
        description=(
            "Most texts per model batch (0: by device, 16 on a CPU, where small batches run fastest, 1,024 on a GPU)."
        ),
    )
    embed_batch_tokens: int = Field(
        default=0,
        ge=0,
        description=(
            "Most positions per model batch when torch runs the model, texts times the batch's longest text in tokens"
            " (0: by device, no bound on a CPU, 32,768 on a GPU): short texts go in large batches, long ones in"
            " small, and none runs out of GPU memory."
        ),
    )
    embedder_threads: int = Field(
        default=2,
        ge=1,
        description=(
            "Jobs an embedder process works on at once. With two, the model encodes one job's texts while the other"
            " job's documents are read, tokenised and its vectors stored, and OpenVINO's streams run both jobs' model"
            " batches; torch's model calls take turns."
        ),
    )
    embedder_backend: Literal["auto", "torch", "openvino"] = Field(
        default="auto",
        description=(
            "What runs the embedder's model: torch; openvino (fp32, on the CPU; needs the openvino extra); or auto,"
            " which at start-up times both on fixed probe texts and takes OpenVINO only when it is faster and its"
            " vectors agree with torch's (cosine >= 0.9999), torch otherwise (and always on CUDA)."
        ),
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where models converted for another backend (OpenVINO) are kept, converted once and reused"
        " (default DATA_DIR/models).",
    )

    # --- workers -----------------------------------------------------------------------------
    worker_threads: int = Field(default=1, description="Dramatiq threads per worker process.")
    worker_poll_ms: int = Field(
        default=c.WORKER_POLL_MS,
        gt=0,
        description="Longest pause between polls of a queue while the worker holds messages from it.",
    )
    worker_idle_wait_ms: int = Field(
        default=c.WORKER_IDLE_WAIT_MS,
        gt=0,
        description=(
            "Longest wait of an idle worker for a send to its queue before it polls anyway (a send wakes it at"
            " once; the poll finds what no send announced: work handed back from a dead worker). Its idle threads"
            " wait as long for a message (a message or a stop wakes them)."
        ),
    )
    maintenance_poll_ms: int = Field(
        default=c.MAINTENANCE_POLL_MS,
        gt=0,
        description=(
            "Longest idle poll of the indexer's maintenance queue (statistics, compaction, cleanup): none of it"
            " waits on a person, and every poll of an empty queue costs the worker and Redis CPU."
        ),
    )
    max_retries: int = Field(default=5, description="Retries before a task gives up (and becomes a dead letter).")
    min_backoff_ms: int = Field(default=500, description="Shortest retry back-off.")
    max_backoff_ms: int = Field(default=60_000, description="Longest retry back-off.")
    shutdown_timeout_s: float = Field(default=30.0, description="Time given to in-flight work on SIGTERM.")
    task_time_limit_s: int = Field(
        default=c.TASK_TIME_LIMIT_S,
        gt=0,
        description=(
            "One run of a task (embedding or indexing a batch, a delete, statistics, mail, a digest) taking longer"
            " is interrupted: a failed attempt, retried after a back-off (a job records 'time limit of N s"
            " exceeded'). Compaction and cleanup have limits of their own. Code inside a single call into a native"
            " library (a FAISS build) is interrupted only once that call returns."
        ),
    )
    outage_patience_s: float = Field(
        default=3600.0,
        description=(
            "Work failing only because Redis or the object store cannot be reached is retried (at up to the"
            " longest back-off) for this long after it was queued, however many attempts that takes, before"
            " it becomes a dead letter."
        ),
    )
    worker_dead_after_s: float = Field(
        default=15.0,
        description=(
            "A worker silent this long is dead: the work it had claimed goes back to the front of its"
            " priority (its lease, renewed every third of this, ran out), and its messages are redelivered."
        ),
    )
    collection_lock_ttl_s: float = Field(
        default=c.COLLECTION_LOCK_TTL_S,
        gt=0,
        description=(
            "Longest hold of a collection's lock by the indexer; a publish cut short by a crash blocks that "
            "collection's next one until then."
        ),
    )
    job_retention_s: int = Field(
        default=c.JOB_RETENTION_S, description="Job records are kept this long after their last change."
    )
    dead_letter_retention_s: int = Field(
        default=c.DEAD_LETTER_RETENTION_S, description="Dead letters are kept this long."
    )
    priority_starve_every: int = Field(
        default=10, description="Every Nth claim goes to a starving lower priority (0: strict priority)."
    )
    priority_starve_after_s: float = Field(default=30.0, description="How long work waits before it is starving.")
    queue_top_up_interval_s: float = Field(
        default=30.0,
        description="How often workers restore tokens of entries whose sender died mid-way (or whose worker died).",
    )

    # --- events ------------------------------------------------------------------------------
    stream_maxlen: int = Field(
        default=c.STREAM_MAXLEN, description="Approximate length the event stream is trimmed to."
    )

    # --- scheduler and maintenance ---------------------------------------------------------------
    schedules: dict[str, ScheduleConfig] = Field(
        default_factory=dict,
        description='Schedules by name over the defaults, as JSON: {"stats": {"cron": "* * * * *"}}.',
    )
    schedule_timezone: str = Field(default="UTC", description="Time zone of schedules that name none.")
    scheduler_lease_ttl_s: float = Field(
        default=c.SCHEDULER_LEASE_TTL_S, description="Leader lease TTL; a dead leader is replaced within about this."
    )
    scheduler_poll_s: float = Field(
        default=c.SCHEDULER_POLL_S, description="How often followers try the lease and the leader reads triggers."
    )
    compaction_on_publish: bool = Field(
        default=True,
        description=(
            "Queue a collection's compaction as soon as a publish fills a tier; off, only the compaction schedule"
            " (or a manual run) merges segments."
        ),
    )
    compaction_tier_base_vectors: int = Field(
        default=c.COMPACTION_TIER_BASE_VECTORS,
        gt=0,
        description=(
            "Size of the smallest tier: segments below `base x merge factor` live vectors are tier 0, tier t holds"
            " segments of `base x factor^t` up to `base x factor^(t+1)`."
        ),
    )
    compaction_merge_factor: int = Field(
        default=c.COMPACTION_MERGE_FACTOR,
        ge=2,
        description=(
            "A tier holding this many segments is merged into one segment of the next tier, right after the publish"
            " that filled it; a collection keeps fewer than this many segments per tier."
        ),
    )
    compaction_max_segment_vectors: int = Field(
        default=c.COMPACTION_MAX_SEGMENT_VECTORS,
        gt=0,
        description=(
            "Segments of this many live vectors or more are not merged further (only rewritten without their"
            " tombstones): it bounds the time and memory of one merge."
        ),
    )
    compaction_deleted_ratio: float = Field(
        default=c.COMPACTION_DELETED_RATIO, description="A segment with this share of tombstones is rewritten."
    )
    compaction_max_tombstones: int = Field(
        default=c.COMPACTION_MAX_TOMBSTONES,
        gt=0,
        description=(
            "A published manifest listing more deleted documents than this queues the rewrite of its most"
            " tombstoned segment at once: every version repeats its tombstones, so this bounds a manifest's size."
        ),
    )
    approximate_threshold: int = Field(
        default=c.APPROXIMATE_THRESHOLD,
        description="Merged segments of at least this many vectors are approximate (`approximate_kind`).",
    )
    approximate_kind: Literal["hnsw", "ivf"] = Field(
        default=c.APPROXIMATE_KIND,
        description="The approximate index of large segments: `hnsw` (a graph) or `ivf` (inverted lists, IVF-Flat).",
    )
    min_recall: float = Field(
        default=c.MIN_RECALL,
        gt=0,
        le=1,
        description=(
            "Recall@10 every approximate or int8 segment must show against exact float32 search at build (200"
            " queries drawn from the segment); an approximate one's search parameter is raised until it does, else"
            " the segment is built float32 (an int8 approximate one as float32 of its kind, then flat)."
        ),
    )
    hnsw_m: int = Field(default=c.HNSW_M, description="HNSW links per node (stored in the segment).")
    hnsw_ef_construction: int = Field(
        default=c.HNSW_EF_CONSTRUCTION, description="HNSW build beam (stored in the segment)."
    )
    hnsw_ef_search: int = Field(
        default=c.HNSW_EF_SEARCH,
        description=(
            "Largest HNSW search beam (efSearch) tried when checking a segment's recall; the smallest that reaches"
            " `min_recall` is stored in the manifest and used by searches."
        ),
    )
    compaction_time_limit_s: int = Field(
        default=c.COMPACTION_TIME_LIMIT_S,
        gt=0,
        description=(
            "One compaction run (every collection in its scope, or a full rebuild) taking longer is interrupted and"
            " retried, like any task over its time limit; collections it already compacted stay compacted."
        ),
    )
    cleanup_time_limit_s: int = Field(
        default=c.CLEANUP_TIME_LIMIT_S,
        gt=0,
        description="One retention cleanup run taking longer is interrupted and retried, like any task over its limit.",
    )
    cleanup_retention_s: int = Field(
        default=c.CLEANUP_RETENTION_S, description="Cleanup deletes only objects older than this."
    )
    cleanup_keep_manifests: int = Field(
        default=c.CLEANUP_KEEP_MANIFESTS, ge=1, description="Published manifests always kept (rollback targets)."
    )
    stats_refresh_s: float = Field(
        default=c.STATS_REFRESH_S, description="How often the gateway reads index statistics into its gauges."
    )

    # --- notifier: webhooks ------------------------------------------------------------------
    notifier_threads: int = Field(
        default=8,
        description="Dramatiq threads of a notifier process: mail, digests, sweeps (attempts run on its event loop).",
    )
    webhook_timeout_s: float = Field(default=15.0, gt=0, description="A delivery attempt gives up after this long.")
    webhook_max_attempts: int = Field(
        default=15,
        ge=1,
        description="Attempts per delivery before it is exhausted (a retry or replay gives it a fresh set).",
    )
    webhook_retry_initial_s: float = Field(default=60.0, ge=0, description="Delay before the first retry.")
    webhook_retry_multiplier: float = Field(
        default=2.0,
        ge=1,
        description="Each retry waits this much longer (the defaults: 60, 120, 240, 480, 960, 1200, 1200... s).",
    )
    webhook_retry_max_s: float = Field(default=1200.0, ge=0, description="Longest delay between two attempts.")
    webhook_retry_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each delay is shortened by up to this fraction, at random."
    )
    webhook_retry_schedule: str | None = Field(
        default=None,
        description=(
            "Explicit seconds between attempts ('5,30,300,1800'; the last repeats); replaces the exponential schedule."
        ),
    )
    webhook_disable_after_s: float = Field(
        default=c.WEBHOOK_DISABLE_AFTER_S,
        gt=0,
        description="Disable an endpoint without a single success for this long.",
    )
    webhook_allow_hosts: str = Field(
        default="", description="Hosts and CIDR ranges that webhooks may reach although they are private (comma list)."
    )
    webhook_endpoint_concurrency: int = Field(
        default=50, ge=1, description="Attempts in flight per endpoint at most, across notifiers."
    )
    webhook_failing_endpoint_concurrency: int = Field(
        default=c.WEBHOOK_FAILING_ENDPOINT_CONCURRENCY,
        ge=1,
        description="Attempts in flight at most for an endpoint whose last attempt failed (until one succeeds).",
    )
    webhook_max_in_flight: int = Field(default=1000, ge=1, description="Attempts in flight per notifier process.")
    webhook_log_retention_s: int = Field(
        default=c.WEBHOOK_LOG_RETENTION_S,
        description="How long deliveries, their attempts and the events sent are kept.",
    )
    webhook_secret_grace_s: int = Field(
        default=c.WEBHOOK_SECRET_GRACE_S, description="A rotated-out secret keeps signing this long."
    )

    # --- notifier: email ---------------------------------------------------------------------
    smtp_host: str | None = Field(default=None, description="SMTP server; unset: no email is sent.")
    smtp_port: int = Field(default=587, description="SMTP server port.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS upgrade, implicit TLS (usually port 465), or plain text."
    )
    smtp_username: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password, if the server wants one.")
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the SMTP server's certificate (unset: the system CAs)."
    )
    smtp_timeout_s: float = Field(default=30.0, description="Timeout of the connection to the SMTP server.")
    email_from: str = Field(default="semaflow <semaflow@localhost>", description="Sender of the mails.")
    email_max_per_hour: int = Field(
        default=30,
        ge=0,
        description=(
            "Notification mails per tenant per hour (the digest is not counted); more are dropped (and logged)."
        ),
    )

    # --- telemetry ---------------------------------------------------------------------------
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Worker processes serve /metrics and /healthz here, and the gateway every series of its own "
            "(its public /metrics leaves out those labelled by tenant or collection); 0: any free port; "
            "unset: not served, but `semaflow up` gives each process a free port."
        ),
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the metrics server binds (0.0.0.0 in containers)."
    )
    otel_traces_exporter: str | None = Field(
        default=None,
        validation_alias="OTEL_TRACES_EXPORTER",
        description="`otlp` turns tracing on (the OTel SDK reads its other OTEL_* variables itself).",
    )

    # --- logging -----------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Log level.")
    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless attached to a terminal.")

    def require_redis_url(self) -> str:
        """The Redis URL a service must have (``semaflow up`` sets it for its children).

        Raises:
            ConfigurationError: none is configured.
        """
        if not self.redis_url:
            raise ConfigurationError("SEMAFLOW_REDIS_URL is not set (run the services with `semaflow up`, or set it)")
        return self.redis_url

    def schedule_table(self) -> dict[str, Schedule]:
        """Every schedule in effect (defaults plus ``schedules``), by name.

        Raises:
            ConfigurationError: a schedule is invalid.
        """
        return configured(self.schedules, self.schedule_timezone)

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _valid_allow_list(cls, value: str) -> str:
        AllowList.parse(value)
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_delays(value)
        return value

    @property
    def webhook_allow_list(self) -> AllowList:
        """Where webhooks may go although the address is private."""
        return AllowList.parse(self.webhook_allow_hosts)

    @property
    def segment_cache_path(self) -> Path:
        """The gateway's segment cache directory in effect."""
        return self.segment_cache_dir if self.segment_cache_dir is not None else self.data_dir / "segment-cache"

    @property
    def local_store_dir(self) -> Path:
        """The local object-store directory in effect."""
        return self.store_dir if self.store_dir is not None else self.data_dir / "objects"

    @property
    def model_cache(self) -> Path:
        """The directory of converted models in effect."""
        return self.model_cache_dir if self.model_cache_dir is not None else self.data_dir / "models"
