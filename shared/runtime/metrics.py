"""Prometheus metrics of a service process: a registry of its own, served with ``/healthz`` on a port.

Every process exports its own metrics (one exporter per process, so a service run as several
processes is simply several scrape targets). Metrics are made when a service is built, never at
import time, in the registry of that build: two services built in one test process do not collide.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

if TYPE_CHECKING:
    from shared.config import Settings

log = structlog.get_logger(__name__)

# Task and attempt durations run from milliseconds (a token that finds nothing) to minutes (a big batch).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_HEALTHY: Final = b'{"status": "ok"}'


def process_registry() -> CollectorRegistry:
    """A registry holding this process's CPU, memory, file descriptors and garbage collection figures."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class WorkerMetrics:
    """What every worker process measures: its Dramatiq tasks (filled in by :class:`TaskMetrics`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry()
        self.task_seconds = Histogram(
            "semaflow_task_duration_seconds",
            "Time a Dramatiq task ran, by actor and outcome (ok, retry, failed, dead).",
            ["actor", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.task_retries = Counter(
            "semaflow_task_retries",
            "Task runs that failed and were scheduled to run again, by actor.",
            ["actor"],
            registry=self.registry,
        )


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line each."""


@dataclass
class MetricsServer:
    """The running ``/metrics`` and ``/healthz`` server of a process."""

    host: str
    port: int
    _server: ThreadingWSGIServer
    _thread: threading.Thread

    @property
    def address(self) -> str:
        """``host:port`` it listens on."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` at ``/metrics`` and liveness at ``/healthz`` from a daemon thread; port 0 picks a free one."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [_HEALTHY]
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    bound = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    log.info("metrics.serving", address=f"{host}:{bound}")
    return MetricsServer(host, bound, server, thread)


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> MetricsServer | None:
    """Serve a worker process's metrics where the settings say (``SEMAFLOW_METRICS_PORT``; unset: nowhere)."""
    if settings.metrics_port is None:
        return None
    return serve(registry, settings.metrics_host, settings.metrics_port)


def beat_info(server: MetricsServer | None) -> str:
    """What a process's heartbeat says about it: where its metrics are served (so tools can find them)."""
    return json.dumps({"metrics": server.address} if server is not None else {})
