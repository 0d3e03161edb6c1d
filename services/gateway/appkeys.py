"""Typed keys of the gateway's application and request state.

The gateway's own parts are named here for type checking only, so that importing a key ties no
layer of the gateway to another (the HTTP plumbing reads keys whose values the API layer made).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

import dramatiq
import redis.asyncio as aioredis
from aiohttp import web

from shared.config import Settings
from shared.index.storage import ObjectStore
from shared.records.apikeys import ApiKey

if TYPE_CHECKING:
    from services.gateway.api.job_control import JobControl
    from services.gateway.api.subscriptions import Subscriptions
    from services.gateway.api.writes import Writes
    from services.gateway.http.ingest_bodies import IngestBodies
    from services.gateway.http.keycache import VerifiedKeys
    from services.gateway.http.ratelimit import Decision, RateLimiter
    from services.gateway.metrics import GatewayMetrics
    from services.gateway.search.cache import SearchCache
    from services.gateway.search.documents import DocumentReader
    from services.gateway.search.pipeline import Searcher
    from services.gateway.search.querymodel import QueryModel
    from services.gateway.search.snapshots import IndexRegistry
    from shared.runtime.metrics import MetricsServer

SETTINGS: Final = web.AppKey("settings", Settings)
REDIS: Final = web.AppKey("redis", aioredis.Redis)
STORE: Final = web.AppKey("store", ObjectStore)
BROKER: Final = web.AppKey("broker", dramatiq.Broker)
REGISTRY: Final[web.AppKey[IndexRegistry]] = web.AppKey("registry")
MODEL: Final[web.AppKey[QueryModel]] = web.AppKey("model")
WRITES: Final[web.AppKey[Writes]] = web.AppKey("writes")
CONTROL: Final[web.AppKey[JobControl]] = web.AppKey("control")
SEARCH_POOL: Final = web.AppKey("search_pool", ThreadPoolExecutor)
# The one thread that decodes large request bodies (and ingest bodies the worker processes do not). That work
# holds the GIL, so more threads would add no throughput, only more threads for the event loop to wait behind.
BODY_POOL: Final = web.AppKey("body_pool", ThreadPoolExecutor)
# Ingest bodies parsed, validated and encoded in worker processes, outside this process's GIL.
INGEST_BODIES: Final[web.AppKey[IngestBodies]] = web.AppKey("ingest_bodies")
SUBSCRIPTIONS: Final[web.AppKey[Subscriptions]] = web.AppKey("subscriptions")
# Keys Redis confirmed lately, honoured from memory while Redis cannot be reached.
VERIFIED_KEYS: Final[web.AppKey[VerifiedKeys]] = web.AppKey("verified_keys")

METRICS: Final[web.AppKey[GatewayMetrics]] = web.AppKey("metrics")
# Absent unless SEMAFLOW_METRICS_PORT is set: the internal server of every series.
METRICS_SERVER: Final[web.AppKey[MetricsServer]] = web.AppKey("metrics_server")
SEARCHER: Final[web.AppKey[Searcher]] = web.AppKey("searcher")
DOCUMENTS: Final[web.AppKey[DocumentReader]] = web.AppKey("documents")
# Absent when the search cache, or rate limiting, is switched off.
CACHE: Final[web.AppKey[SearchCache]] = web.AppKey("cache")
LIMITER: Final[web.AppKey[RateLimiter]] = web.AppKey("limiter")
# Set when the gateway begins to shut down: long-polls answer at once.
SHUTTING_DOWN: Final = web.AppKey("shutting_down", asyncio.Event)

# Request-scoped: the authenticated key's record, the request's id, and its rate-limit decision.
PRINCIPAL: Final = web.RequestKey("principal", ApiKey)
REQUEST_ID: Final = web.RequestKey("request_id", str)
RATE_LIMIT: Final[web.RequestKey[Decision]] = web.RequestKey("rate_limit")
# A digest of the tenant, the Idempotency-Key and the request's fingerprint, when it carries a key: what
# an ingest derives its job id from, so a request run again (its first run died unanswered) finds its job.
IDEMPOTENT_REQUEST: Final = web.RequestKey("idempotent_request", str)
