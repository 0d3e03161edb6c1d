"""Typed settings, read once from ``SEMAFLOW_*`` environment variables at a service's edge."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import constants as c
from shared.errors import ConfigurationError


class Settings(BaseSettings):
    """Every setting of every service; each service reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="SEMAFLOW_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(default=Path(".semaflow"), description="Root of embedded Redis data and the local store.")
    redis_url: str | None = Field(default=None, description="Redis URL; unset means `semaflow up` starts its own.")
    store_dir: Path | None = Field(default=None, description="Local object-store directory (default DATA_DIR/objects).")
    s3_bucket: str | None = Field(
        default=None, description="Use S3 (any S3 API) with this bucket instead of a directory."
    )
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""

    # --- gateway -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    max_documents_per_request: int = c.MAX_DOCUMENTS_PER_REQUEST
    max_request_bytes: int = c.MAX_REQUEST_BYTES
    query_model_timeout_s: float = 120.0
    index_reconcile_interval_s: float = 30.0
    search_workers: int = Field(default=0, description="Searches run at once (0: one per CPU core).")
    search_threads: int = Field(
        default=1, description="FAISS threads per search; concurrent requests already use every core."
    )
    idempotency_ttl_s: int = Field(
        default=c.IDEMPOTENCY_TTL_S, description="How long the answer to an Idempotency-Key is replayed."
    )

    # --- embedding ---------------------------------------------------------------------------
    model_path: Path | None = Field(
        default=None, description="SentenceTransformer folder (default: the packaged model)."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    embed_batch_size: int = 64

    # --- workers -----------------------------------------------------------------------------
    worker_threads: int = 1
    worker_poll_ms: int = c.WORKER_POLL_MS
    max_retries: int = 5
    min_backoff_ms: int = 500
    max_backoff_ms: int = 60_000
    shutdown_timeout_s: float = 30.0
    task_time_limit_s: int = 15 * 60
    worker_dead_after_s: float = Field(
        default=15.0, description="A worker silent this long is dead; its unfinished messages are redelivered."
    )
    job_retention_s: int = c.JOB_RETENTION_S
    dead_letter_retention_s: int = c.DEAD_LETTER_RETENTION_S
    priority_starve_every: int = Field(
        default=10, description="Every Nth claim goes to a starving lower priority (0: strict priority)."
    )
    priority_starve_after_s: float = Field(default=30.0, description="How long work waits before it is starving.")
    queue_top_up_interval_s: float = 30.0

    # --- events ------------------------------------------------------------------------------
    stream_maxlen: int = c.STREAM_MAXLEN

    # --- logging -----------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless attached to a terminal.")

    def require_redis_url(self) -> str:
        """The Redis URL a service must have (``semaflow up`` sets it for its children).

        Raises:
            ConfigurationError: none is configured.
        """
        if not self.redis_url:
            raise ConfigurationError("SEMAFLOW_REDIS_URL is not set (run the services with `semaflow up`, or set it)")
        return self.redis_url

    @property
    def local_store_dir(self) -> Path:
        """The local object-store directory in effect."""
        return self.store_dir if self.store_dir is not None else self.data_dir / "objects"
