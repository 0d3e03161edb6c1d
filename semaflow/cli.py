"""``semaflow up``: every service as its own process, with embedded defaults."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis
import structlog

from semaflow import admin, commands, doctor
from semaflow.commands.connection import DEV_KEY_FILE, write_gateway_url
from semaflow.redis_server import RedisServer, port_free
from semaflow.supervisor import Supervisor
from shared import keys
from shared.config import Settings
from shared.constants import DEV_TENANT
from shared.records import apikeys, ratelimits
from shared.runtime.telemetry import configure_logging

log = structlog.get_logger("semaflow")

SERVICES = ("gateway", "embedder", "indexer", "notifier", "scheduler")
WORKERS = ("embedder", "indexer", "notifier", "scheduler")


def dev_key(client: redis.Redis, data_dir: Path) -> str:
    """The development admin key: created on first start, kept (0600) in the data dir, registered in Redis."""
    path = data_dir / DEV_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
    else:
        key = apikeys.new_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    if not apikeys.indexed(client, key):
        apikeys.store(client, key, DEV_TENANT, apikeys.Role.ADMIN, name="development key")
        log.info("dev_key.registered", tenant=DEV_TENANT)
    # The development tenant runs without rate limits (a tenant an admin creates keeps the defaults);
    # quotas set for it with `semaflow limits set dev …` are kept.
    if ratelimits.unlimited(client, DEV_TENANT):
        log.info("dev_tenant.unlimited", tenant=DEV_TENANT)
    return key


def _ready(client: redis.Redis, sup: Supervisor, url: str) -> bool:
    host = socket.gethostname()
    try:
        for child in sup.children:
            if child.name in WORKERS and not client.exists(keys.heartbeat(child.name, f"{host}:{child.pid}")):
                return False
    except redis.ConnectionError:  # the embedded Redis is restarting
        return False
    gateway = next(c for c in sup.children if c.name == "gateway")
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            # The pid proves the answer comes from our gateway, not another server on the port.
            return bool(resp.status == 200 and json.load(resp).get("pid") == gateway.pid)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def metrics_endpoints(client: redis.Redis, sup: Supervisor) -> dict[str, str]:
    """Where each worker process serves its metrics, as its heartbeat says."""
    host = socket.gethostname()
    found: dict[str, str] = {}
    for child in sup.children:
        if child.name not in WORKERS:
            continue
        try:
            raw = client.get(keys.heartbeat(child.name, f"{host}:{child.pid}"))
        except redis.ConnectionError:  # the embedded Redis is restarting
            continue
        try:
            address = json.loads(raw).get("metrics") if raw else None
        except ValueError:
            address = None
        if address:
            found[child.name] = f"http://{address}/metrics"
    return found


def up(args: argparse.Namespace) -> int:
    """Start Redis (unless one is configured), then the five services; supervise them all until signalled.

    The embedded Redis is restarted like a service when it exits, and stopped after every service has.
    """
    overrides = {
        k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items() if v is not None
    }
    settings = Settings(**overrides)
    configure_logging("semaflow", level=settings.log_level, json=settings.log_json)
    if not port_free(settings.host, settings.port):
        log.error("gateway.port_in_use", host=settings.host, port=settings.port)
        print(
            f"semaflow: {settings.host}:{settings.port} is already in use (choose another with --port)", file=sys.stderr
        )
        return 2
    data_dir = settings.data_dir.resolve()
    # It holds the development key, the Redis password and the data: its owner's alone.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    redis_server = None
    redis_url = settings.redis_url
    if redis_url is None:
        redis_server = RedisServer.start(data_dir / "redis")
        redis_url = redis_server.url
        log.info(
            "redis.started", url=redis_server.masked_url, pid=redis_server.process.pid, dir=str(redis_server.directory)
        )
    client = redis.Redis.from_url(redis_url)
    key = dev_key(client, data_dir)
    # `semaflow keys` and `semaflow limits` find this stack's Redis here (it listens on a free port).
    url_file = admin.write_redis_url(data_dir, redis_url)

    env = {
        **os.environ,
        "SEMAFLOW_REDIS_URL": redis_url,
        "SEMAFLOW_DATA_DIR": str(data_dir),
        "SEMAFLOW_HOST": settings.host,
        "SEMAFLOW_PORT": str(settings.port),
        # Every worker serves its metrics on a port of its own, picked free (they all run on this host).
        "SEMAFLOW_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    sup = Supervisor(env)
    for name in SERVICES:
        sup.add(name, f"services.{name}")
    sup.start()
    base_url = f"http://{settings.host}:{settings.port}"
    # The API commands (`semaflow ingest`, `search`, `jobs` ...) find this stack's gateway here.
    gateway_file = write_gateway_url(data_dir, base_url)
    announced = False
    deadline = time.monotonic() + args.ready_timeout
    code = 0
    try:
        while not stopping.wait(0.25):
            if redis_server is not None:
                redis_server.poll()
            sup.poll()
            if not announced:
                if _ready(client, sup, base_url):
                    print(f"semaflow ready: {base_url} api_key={key}", flush=True)
                    announced = True
                    log.info("metrics.endpoints", gateway=f"{base_url}/metrics", **metrics_endpoints(client, sup))
                elif time.monotonic() > deadline:
                    log.error("stack.not_ready", timeout_s=args.ready_timeout)
                    code = 1
                    break
    finally:
        log.info("stack.stopping")
        sup.stop(settings.shutdown_timeout_s + 5)
        client.close()
        url_file.unlink(missing_ok=True)
        gateway_file.unlink(missing_ok=True)
        if redis_server is not None:
            redis_server.stop()
            log.info("redis.stopped", restarts=redis_server.restarts)
    return code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``semaflow`` console script."""
    parser = argparse.ArgumentParser(prog="semaflow", description="Event-driven semantic indexing and search.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="run every service (embedded Redis and local store unless configured)")
    p_up.add_argument("--host", default=None, help="gateway address (default 127.0.0.1)")
    p_up.add_argument("--port", type=int, default=None, help="gateway port (default 8080)")
    p_up.add_argument("--data-dir", type=Path, default=None, help="data directory (default ./.semaflow)")
    p_up.add_argument("--ready-timeout", type=float, default=600.0, help="give up if not ready after this many seconds")
    admin.add_commands(sub)
    doctor.add_command(sub)
    commands.add_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "up":
        sys.exit(up(args))
    if args.command == "doctor":
        sys.exit(doctor.main(args))
    if commands.handles(args):
        sys.exit(commands.run(args))
    sys.exit(admin.run(args))
