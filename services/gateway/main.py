"""Gateway service: the aiohttp application and its composition root."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from services.gateway.appkeys import BROKER, CONTROL, MODEL, REDIS, REGISTRY, SEARCH_POOL, SETTINGS, STORE, WRITES
from services.gateway.auth import auth_middleware
from services.gateway.control import control_routes
from services.gateway.idempotency import idempotency_middleware
from services.gateway.jobcontrol import JobControl
from services.gateway.problems import problems_middleware
from services.gateway.querymodel import QueryModel
from services.gateway.routes import routes
from services.gateway.search import search_pool
from services.gateway.snapshots import IndexRegistry
from services.gateway.writes import Writes
from shared.broker import build_broker
from shared.config import Settings
from shared.embedding import Encoder
from shared.storage import ObjectStore, open_store
from shared.telemetry import configure_logging

log = structlog.get_logger(__name__)
NAME = "gateway"


def build(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    encoder_loader: Callable[[], Encoder] | None = None,
) -> web.Application:
    """The gateway app; Redis, broker, index follower and model are started by its cleanup context."""
    redis_url = settings.require_redis_url()
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware, idempotency_middleware],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app[STORE] = store or open_store(settings)
    loader = encoder_loader or (
        lambda: Encoder.load(settings.model_path, device=settings.device, batch_size=settings.embed_batch_size)
    )
    app[MODEL] = QueryModel(loader, timeout_s=settings.query_model_timeout_s)
    app.add_routes(routes)
    app.add_routes(control_routes)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # Blocking XREADs wait up to 2 s; the socket timeout must outlast them.
        client = aioredis.Redis.from_url(
            redis_url, health_check_interval=30, socket_timeout=15, socket_connect_timeout=5
        )
        broker = build_broker(settings, redis_url)
        registry = IndexRegistry(client, app[STORE])
        app[REDIS] = client
        app[BROKER] = broker
        app[REGISTRY] = registry
        app[WRITES] = Writes(
            client, app[STORE], broker, stream_maxlen=settings.stream_maxlen, job_retention_s=settings.job_retention_s
        )
        app[CONTROL] = JobControl(client, broker, stream_maxlen=settings.stream_maxlen)
        app[SEARCH_POOL] = search_pool(settings.search_workers, settings.search_threads)
        stop = asyncio.Event()
        follower = asyncio.create_task(
            _follow_forever(registry, stop, settings.index_reconcile_interval_s), name="index-follower"
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
        broker.close()
        await client.aclose()

    app.cleanup_ctx.append(resources)
    return app


async def _start_model_after(registry: IndexRegistry, model: QueryModel) -> None:
    await registry.loaded.wait()
    model.start()


async def _follow_forever(registry: IndexRegistry, stop: asyncio.Event, reconcile_s: float) -> None:
    """Keep following index events, restarting after a Redis outage."""
    while not stop.is_set():
        try:
            await registry.follow(stop, reconcile_s=reconcile_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("index.follow_failed", error=str(exc))
            await asyncio.sleep(1)


def main() -> None:
    """Serve until SIGTERM/SIGINT; requests in flight get the shutdown timeout to finish."""
    settings = Settings()
    configure_logging(NAME, level=settings.log_level, json=settings.log_json)
    app = build(settings)
    log.info("gateway.starting", host=settings.host, port=settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=None,
        print=None,
        handle_signals=True,
    )
