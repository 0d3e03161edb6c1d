"""``semaflow up`` supervises its embedded Redis: a ``kill -9`` of it is survived, and SIGTERM stops it last."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from semaflow.admin import REDIS_URL_FILE
from shared import keys
from tests.e2e.conftest import start_stack

WORKERS = ("embedder", "indexer", "notifier", "scheduler")
# What the services' retry loops logged per attempt before an outage was rate-limited.
FLOOD = ("scheduler.pass_failed", "notifier.loop_failed", "heartbeat.failed", "index.follow_retry_failed")


def _events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _until(what: str, check: Any, log: Path, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (redis.ConnectionError, OSError):
            found = None
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text(errors='replace')[-20_000:]}")


def _readyz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except urllib.error.URLError:
        return False


def _heartbeats(client: redis.Redis) -> set[str]:
    return {
        service for service in WORKERS if any(True for _ in client.scan_iter(match=keys.heartbeat_pattern(service)))
    }


def test_a_killed_redis_comes_back_with_its_data_and_a_sigterm_stops_it_last(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stack = start_stack(data_dir)
    try:
        url = (data_dir / REDIS_URL_FILE).read_text().strip()
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
        info = client.info("server")
        pid, port = int(info["process_id"]), int(info["tcp_port"])
        client.set("written-before-the-kill", "kept")
        # appendfsync everysec (redis/redis.conf): the write is on disk within about a second.
        conf = (data_dir / "redis" / "redis.conf").read_text()
        assert "appendonly yes" in conf and "appendfsync everysec" in conf
        aof = data_dir / "redis" / "appendonlydir"
        _until(
            "the write in the AOF",
            lambda: any(b"written-before-the-kill" in p.read_bytes() for p in aof.glob("*.incr.aof")),
            stack.log,
        )
        killed_at = len(_events(stack.log))

        os.kill(pid, signal.SIGKILL)

        def restarted() -> int | None:
            new_pid = int(client.info("server")["process_id"])
            return new_pid if new_pid != pid else None

        new_pid = _until("Redis restarted on its port", restarted, stack.log, timeout_s=15)
        assert int(client.info("server")["tcp_port"]) == port
        assert client.get("written-before-the-kill") == b"kept"
        assert os.getsid(new_pid) == new_pid  # still a session of its own
        # The services reconnect with the URL they had: ready again, every worker beating.
        _until("the gateway ready", lambda: _readyz(stack.url), stack.log)
        client.delete(*client.scan_iter(match=keys.heartbeat_pattern()))  # beats from before the kill
        _until("every worker's heartbeat", lambda: _heartbeats(client) == set(WORKERS), stack.log)
        client.close()
        after_kill = _events(stack.log)[killed_at:]
        events = [e.get("event", "") for e in after_kill]
        assert "redis.exited" in events and "redis.restarted" in events, events
        assert "redis.unavailable" in events and "redis.recovered" in events, events
        flood = [e for e in after_kill if e.get("event", "") in FLOOD or "Consumer encountered" in e.get("event", "")]
        assert flood == []
        # The gateway's index follower says once that it lost Redis (and backs off), not on every try.
        assert sum(e.get("event") == "index.follow_failed" for e in after_kill) <= 1, after_kill
        # Each process says "unavailable" at most every 5 s.
        for service in ("gateway", *WORKERS):
            said = [e for e in after_kill if e.get("service") == service and e.get("event") == "redis.unavailable"]
            assert len(said) <= 4, said
    finally:
        stopping_at = len(_events(stack.log))
        code = stack.stop()
    assert code == 0, stack.logs()

    stop = _events(stack.log)[stopping_at:]
    order = [e["event"] for e in stop if e.get("service") == "semaflow"]
    assert order.index("services.stopped") < order.index("redis.stopped"), order
    assert [e for e in stop if e.get("level") in ("error", "critical")] == []
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)
