"""The embedded Redis of ``semaflow up``: password-protected, its files its owner's alone."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from semaflow.redis_server import CONFIG_FILE, PASSWORD_FILE, RedisServer, mask_url


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
