"""Gateway service: the aiohttp application and its composition root."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.gateway.api.admin import admin_routes
from services.gateway.api.collections import routes
from services.gateway.api.console import console_routes
from services.gateway.api.documents import document_routes
from services.gateway.api.health import OPENAPI, ops_routes
from services.gateway.api.identity import identity_routes
from services.gateway.api.job_control import JobControl
from services.gateway.api.jobs import control_routes
from services.gateway.api.operations import install as install_maintenance
from services.gateway.api.operations import maintenance_routes
from services.gateway.api.subscriptions import Subscriptions
from services.gateway.api.webhooks import webhook_routes
from services.gateway.api.writes import Writes
from services.gateway.appkeys import (
    BODY_POOL,
    BROKER,
    CACHE,
    CONTROL,
    DOCUMENTS,
    INGEST_BODIES,
    LIMITER,
    METRICS,
    MODEL,
    REDIS,
    REGISTRY,
    SEARCH_POOL,
    SEARCHER,
    SETTINGS,
    SHUTTING_DOWN,
    STORE,
    SUBSCRIPTIONS,
    VERIFIED_KEYS,
    WRITES,
)
from services.gateway.clustermetrics import cluster_gauges
from services.gateway.http import parse_errors
from services.gateway.http.auth import auth_middleware
from services.gateway.http.context import TrustedProxies, context_middleware, response_decorator
from services.gateway.http.cors import CorsPolicy
from services.gateway.http.declarations import ENDPOINTS, Endpoints, declared, install
from services.gateway.http.idempotency import idempotency_middleware
from services.gateway.http.ingest_bodies import IngestBodies
from services.gateway.http.keycache import VerifiedKeys
from services.gateway.http.openapi import ApiDescription
from services.gateway.http.problems import problems_middleware
from services.gateway.http.ratelimit import RateLimiter
from services.gateway.http.spans import tracing_middleware
from services.gateway.http.throttle import rate_limit_middleware
from services.gateway.metrics import GatewayMetrics, internal_metrics
from services.gateway.search.cache import SearchCache
from services.gateway.search.documents import DocumentReader
from services.gateway.search.engine import search_pool
from services.gateway.search.follower import follow_forever
from services.gateway.search.pipeline import Searcher
from services.gateway.search.querymodel import QueryModel
from services.gateway.search.snapshots import IndexRegistry
from services.gateway.search.texts import TextCache
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.segcache import SegmentCache
from shared.index.storage import ObjectStore, open_store
from shared.messaging import tasks
from shared.records.ratelimits import Quotas
from shared.runtime import telemetry
from shared.runtime.broker import build_broker

log = structlog.get_logger(__name__)
NAME = "gateway"
API_VERSION = "1"
# Every declared route of the API; a new routes module adds its table here.
ROUTE_TABLES: tuple[Endpoints, ...] = (
    routes,
    document_routes,
    control_routes,
    webhook_routes,
    admin_routes,
    maintenance_routes,
    ops_routes,
    identity_routes,
    console_routes,
)


def build(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    encoder_loader: Callable[[], Encoder] | None = None,
) -> web.Application:
    """The gateway app; Redis, broker, index follower and model are started by its cleanup context."""
    redis_url = settings.require_redis_url()
    cors = CorsPolicy.parse(settings.cors_origins)
    parse_errors.install()  # aiohttp's own replies to unparsable requests say Server: semaflow too
    app = web.Application(
        # Outermost first: the request's trace span, request id and logs, errors as problems, CORS
        # preflights before the key check, then the key and its role, its rate limit, and
        # Idempotency-Key replays.
        middlewares=[
            tracing_middleware,
            context_middleware,
            problems_middleware,
            cors.middleware(),
            auth_middleware,
            rate_limit_middleware,
            idempotency_middleware,
        ],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app[SHUTTING_DOWN] = asyncio.Event()

    async def shutting_down(app: web.Application) -> None:
        app[SHUTTING_DOWN].set()

    app.on_shutdown.append(shutting_down)
    app[METRICS] = GatewayMetrics()
    app[VERIFIED_KEYS] = VerifiedKeys(settings.key_cache_ttl_s)
    app[ENDPOINTS] = install(app.router, *ROUTE_TABLES)
    app[OPENAPI] = ApiDescription(declared(app[ENDPOINTS]), title="semaflow", version=API_VERSION)
    app.on_response_prepare.append(response_decorator(cors, TrustedProxies.parse(settings.trusted_proxies)))
    app[STORE] = store or open_store(settings)
    loader = encoder_loader or (
        lambda: Encoder.load(
            settings.model_path,
            device=settings.device,
            batch_size=settings.embed_batch_size,
            batch_tokens=settings.embed_batch_tokens,
        )
    )
    app[MODEL] = QueryModel(
        loader,
        timeout_s=settings.query_model_timeout_s,
        max_batch=settings.query_batch_max,
        batch_wait_s=settings.query_batch_wait_ms / 1000,
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        client = request_client(redis_url, settings.gateway_redis_timeout_s)
        # Blocking XREADs wait up to 2 s; this client's socket timeout must outlast them.
        stream_client = aioredis.Redis.from_url(
            redis_url, health_check_interval=30, socket_timeout=15, socket_connect_timeout=5
        )
        broker = build_broker(settings, redis_url)
        registry = IndexRegistry(
            client,
            app[STORE],
            SegmentCache(app[STORE], settings.segment_cache_path),
            stream_client=stream_client,
            serves=settings.gateway_collections,
        )
        app[REDIS] = client
        app[BROKER] = broker
        app[REGISTRY] = registry
        app[BODY_POOL] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-bodies")
        app[INGEST_BODIES] = IngestBodies(
            settings.ingest_body_processes,
            app[BODY_POOL],
            max_depth=settings.max_json_depth,
            max_documents=settings.max_documents_per_request,
            nice=settings.background_nice,
        )
        app[WRITES] = Writes(
            client,
            app[STORE],
            broker,
            stream_maxlen=settings.stream_maxlen,
            job_retention_s=settings.job_retention_s,
        )
        subscriptions = Subscriptions(client, settings)
        app[SUBSCRIPTIONS] = subscriptions
        app[CONTROL] = JobControl(
            client,
            broker,
            stream_maxlen=settings.stream_maxlen,
            replayers={tasks.DELIVER_WEBHOOK_OP: subscriptions.replay_letter},
        )
        app[SEARCH_POOL] = search_pool(settings.search_workers, settings.search_threads)
        if settings.rate_limit_enabled:
            app[LIMITER] = RateLimiter(client, Quotas.from_settings(settings))
        cache = None
        if settings.search_cache_enabled:
            cache = SearchCache(
                client,
                app[METRICS],
                l1_ttl_s=settings.search_cache_l1_ttl_s,
                l1_max_entries=settings.search_cache_l1_max_entries,
                l2_ttl_s=settings.search_cache_l2_ttl_s,
            )
            app[CACHE] = cache
            registry.on_drop(cache.forget_local)
        texts = TextCache(registry.cache)
        registry.on_swap(texts.retain)
        registry.on_drop(texts.forget)
        app[SEARCHER] = Searcher(
            registry,
            app[MODEL],
            app[SEARCH_POOL],
            cache,
            app[METRICS],
            texts=texts,
            freshness_wait_s=settings.search_freshness_wait_s,
        )
        app[DOCUMENTS] = DocumentReader(registry, texts, freshness_wait_s=settings.search_freshness_wait_s)
        registry.on_swap(lambda _snapshot: app[METRICS].index_swaps.inc())
        stop = asyncio.Event()
        follower = asyncio.create_task(
            follow_forever(registry, stop, settings.index_reconcile_interval_s), name="index-follower"
        )
        # The model loads once the indexes are in (readiness waits for those, not for the model),
        # so the two never compete for the CPU at start; a query arriving earlier starts it itself.
        model_start = asyncio.create_task(_start_model_after(registry, app[MODEL]), name="model-start")
        yield
        stop.set()
        for task in (follower, model_start):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[MODEL].close()
        app[SEARCH_POOL].shutdown(wait=True)
        await asyncio.to_thread(app[INGEST_BODIES].close)
        app[BODY_POOL].shutdown(wait=True)
        broker.close()
        await stream_client.aclose()
        await client.aclose()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(cluster_gauges)
    app.cleanup_ctx.append(internal_metrics)
    install_maintenance(app)  # after ``resources``: its gauges read through the app's Redis client
    return app


def request_client(redis_url: str, timeout_s: float) -> aioredis.Redis:
    """The Redis client of requests: a dead or hung Redis fails a command within about twice ``timeout_s``.

    One immediate retry (a connection Redis closed while idle is replaced at once), no backoff between
    attempts: a request that cannot reach Redis answers from memory or with 503 rather than waiting.
    """
    return aioredis.Redis.from_url(
        redis_url,
        health_check_interval=30,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


async def _start_model_after(registry: IndexRegistry, model: QueryModel) -> None:
    await registry.loaded.wait()
    model.start()


class ServerOptions(TypedDict):
    """Options of aiohttp's HTTP server that come from the settings."""

    keepalive_timeout: float


def server_options(settings: Settings) -> ServerOptions:
    """Options of aiohttp's HTTP server: a connection idle this long, or still sending its request head, is
    closed (slow clients cannot hold connections open)."""
    return ServerOptions(keepalive_timeout=settings.idle_timeout_s)


def main() -> None:
    """Serve until SIGTERM/SIGINT; requests in flight get the shutdown timeout to finish."""
    settings = Settings()
    telemetry.configure(NAME, settings)
    app = build(settings)
    log.info("gateway.starting", host=settings.host, port=settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_s,
        **server_options(settings),
        access_log=None,
        print=None,
        handle_signals=True,
    )
