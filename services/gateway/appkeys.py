"""Typed keys of the gateway's application and request state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Final

import dramatiq
import redis.asyncio as aioredis
from aiohttp import web

from services.gateway.api.job_control import JobControl
from services.gateway.api.subscriptions import Subscriptions
from services.gateway.api.writes import Writes
from services.gateway.http.ratelimit import Decision, RateLimiter
from services.gateway.metrics import GatewayMetrics
from services.gateway.search.cache import SearchCache
from services.gateway.search.pipeline import Searcher
from services.gateway.search.querymodel import QueryModel
from services.gateway.search.snapshots import IndexRegistry
from shared.config import Settings
from shared.index.storage import ObjectStore
from shared.records.apikeys import ApiKey

SETTINGS: Final = web.AppKey("settings", Settings)
REDIS: Final = web.AppKey("redis", aioredis.Redis)
STORE: Final = web.AppKey("store", ObjectStore)
BROKER: Final = web.AppKey("broker", dramatiq.Broker)
REGISTRY: Final = web.AppKey("registry", IndexRegistry)
MODEL: Final = web.AppKey("model", QueryModel)
WRITES: Final = web.AppKey("writes", Writes)
CONTROL: Final = web.AppKey("control", JobControl)
SEARCH_POOL: Final = web.AppKey("search_pool", ThreadPoolExecutor)
SUBSCRIPTIONS: Final = web.AppKey("subscriptions", Subscriptions)

METRICS: Final = web.AppKey("metrics", GatewayMetrics)
SEARCHER: Final = web.AppKey("searcher", Searcher)
# Absent when the search cache, or rate limiting, is switched off.
CACHE: Final = web.AppKey("cache", SearchCache)
LIMITER: Final = web.AppKey("limiter", RateLimiter)

# Request-scoped: the authenticated key's record, the request's id, and its rate-limit decision.
PRINCIPAL: Final = web.RequestKey("principal", ApiKey)
REQUEST_ID: Final = web.RequestKey("request_id", str)
RATE_LIMIT: Final = web.RequestKey("rate_limit", Decision)
