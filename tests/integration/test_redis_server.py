"""The embedded Redis of ``semaflow up``: password-protected, its files its owner's alone."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog.testing

from semaflow.redis_server import CONFIG_FILE, PASSWORD_FILE, RedisServer, ephemeral_range, free_port, mask_url


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    running = RedisServer.start(tmp_path / "data" / "redis")
    yield running
    running.stop()


def test_a_client_without_the_password_is_refused_and_one_with_it_served(server: RedisServer) -> None:
    anonymous = redis.Redis(port=server.port, socket_connect_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    wrong = redis.Redis(port=server.port, password="not-it", socket_connect_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    anonymous.close()
    wrong.close()

    client = redis.Redis.from_url(server.url)
    assert client.set("k", "v") and client.get("k") == b"v"
    client.close()
    assert server.url == f"redis://:{server.password}@127.0.0.1:{server.port}/0"


def test_the_directory_password_config_and_aof_are_private(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    client.set("written", "1")
    client.close()
    aof_dir = server.directory / "appendonlydir"
    deadline = time.monotonic() + 5  # appendfsync everysec
    while not any(p.stat().st_size for p in aof_dir.glob("*.incr.aof")) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert _mode(server.directory) == 0o700
    assert _mode(server.directory / PASSWORD_FILE) == 0o600
    assert (server.directory / PASSWORD_FILE).read_text().strip() == server.password
    assert _mode(server.directory / CONFIG_FILE) == 0o600
    assert _mode(aof_dir) == 0o700
    written = [p for p in aof_dir.iterdir() if p.is_file()]
    assert any(p.name.endswith(".incr.aof") and p.stat().st_size for p in written)
    assert written and all(_mode(p) == 0o600 for p in written), {p.name: oct(_mode(p)) for p in written}
    assert _mode(server.directory / "redis.log") == 0o600


def test_the_password_is_not_on_the_command_line(server: RedisServer) -> None:
    argv = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    assert server.password.encode() not in argv
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=True).stdout
    assert server.password.encode() not in listed


def test_a_restart_keeps_the_password_and_the_data(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    first = RedisServer.start(directory)
    client = redis.Redis.from_url(first.url)
    client.set("kept", "yes")
    client.close()
    password = first.password
    first.stop()
    (directory / PASSWORD_FILE).chmod(0o644)
    directory.chmod(0o755)

    second = RedisServer.start(directory)
    try:
        assert second.password == password
        assert _mode(directory) == 0o700 and _mode(directory / PASSWORD_FILE) == 0o600
        client = redis.Redis.from_url(second.url)
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        second.stop()


def test_two_directories_get_different_passwords(server: RedisServer, tmp_path: Path) -> None:
    other = RedisServer.start(tmp_path / "other")
    try:
        assert other.password != server.password and len(other.password) >= 32
    finally:
        other.stop()


def test_a_logged_url_has_its_password_masked(server: RedisServer) -> None:
    assert server.password not in server.masked_url
    assert server.masked_url == f"redis://:***@127.0.0.1:{server.port}/0"
    assert mask_url("redis://user:pw@[::1]:6380/2") == "redis://user:***@[::1]:6380/2"
    assert mask_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_redis_runs_in_a_session_of_its_own(server: RedisServer) -> None:
    # A terminal's Ctrl-C signals its foreground process group; Redis is not in it, so it outlives the services.
    assert os.getsid(server.process.pid) == server.process.pid != os.getsid(0)


# --- restarts after an exit (what `semaflow up` does every quarter second) ------------------------------


def _aof_holds(directory: Path, key: bytes, timeout_s: float = 5.0) -> None:
    """Wait until ``key`` is in the AOF on disk (``appendfsync everysec``: within about a second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(key in p.read_bytes() for p in (directory / "appendonlydir").glob("*.incr.aof")):
            return
        time.sleep(0.05)
    pytest.fail(f"{key!r} never reached the AOF")


def _kill_9(server: RedisServer) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(5)


def _poll_until_restarted(server: RedisServer, timeout_s: float = 10.0) -> None:
    old = server.process.pid
    deadline = time.monotonic() + timeout_s
    while server.process.pid == old:
        assert time.monotonic() < deadline, "never restarted"
        server.poll()
        time.sleep(0.02)


def _answers(server: RedisServer, timeout_s: float = 10.0) -> redis.Redis:
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:  # not listening yet, or still loading its AOF
            assert time.monotonic() < deadline, "the restarted server never answered"
            time.sleep(0.05)


def test_a_killed_server_comes_back_on_its_port_with_its_password_and_data(server: RedisServer) -> None:
    url, pid = server.url, server.process.pid
    client = redis.Redis.from_url(url)
    client.set("before-the-kill", "kept")
    client.close()
    _aof_holds(server.directory, b"before-the-kill")

    _kill_9(server)
    _poll_until_restarted(server)

    assert server.url == url and server.process.pid != pid and server.restarts == 1
    client = _answers(server)
    try:
        assert client.get("before-the-kill") == b"kept"
        assert client.info("server")["process_id"] == server.process.pid
    finally:
        client.close()
    assert os.getsid(server.process.pid) == server.process.pid  # still a session of its own


def test_a_crash_loop_backs_off_like_a_service(server: RedisServer) -> None:
    waits = []
    for _ in range(3):
        _kill_9(server)
        server.poll()  # notices the exit
        assert server.restart_at is not None
        waits.append(server.backoff_s)
        pid = server.process.pid
        server.poll()
        assert server.process.pid == pid, "restarted before its back-off ran out"
        _poll_until_restarted(server)
        _answers(server).close()
    # It never ran a minute: 1 s, then doubling (the supervisor's policy).
    assert waits == [1.0, 2.0, 4.0]


def test_a_taken_port_is_reported_and_retried_until_free(server: RedisServer) -> None:
    _kill_9(server)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", server.port))
    squatter.listen()
    try:
        with structlog.testing.capture_logs() as logs:
            deadline = time.monotonic() + 5
            while not any(e["event"] == "redis.port_in_use" for e in logs):
                assert time.monotonic() < deadline, logs
                server.poll()
                time.sleep(0.05)
        taken = next(e for e in logs if e["event"] == "redis.port_in_use")
        assert taken["port"] == server.port and taken["log_level"] == "error" and taken["restart_in_s"] == 2.0
        assert server.process.poll() is not None  # nothing started on a taken port
    finally:
        squatter.close()
    _poll_until_restarted(server)
    _answers(server).close()


def test_a_free_port_is_one_the_kernel_never_hands_out_by_itself() -> None:
    low, high = ephemeral_range()
    ports = {free_port() for _ in range(20)}
    # Ports from bind(0), as a service's metrics server on port 0 takes them, all fall in the range.
    taken = []
    for _ in range(50):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        taken.append(sock)
    try:
        handed_out = {int(sock.getsockname()[1]) for sock in taken}
        assert all(low <= port <= high for port in handed_out)
        assert all(port < low for port in ports)
        assert not ports & handed_out
        for port in ports:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
    finally:
        for sock in taken:
            sock.close()
    capped = free_port(below=low - 10_000)
    assert capped < low - 10_000
