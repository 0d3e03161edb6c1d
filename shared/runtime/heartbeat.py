"""Liveness heartbeats: a short-lived Redis key per running service process."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import structlog

from shared import keys
from shared.constants import HEARTBEAT_TTL_S
from shared.runtime.outage import redis_outage

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)


def instance_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Refreshes ``semaflow:hb:{service}:{instance}`` from a daemon thread until stopped."""

    def __init__(self, client: redis.Redis, service: str, *, ttl_s: int = HEARTBEAT_TTL_S, info: str = "{}") -> None:
        self.client = client
        self.member = f"{service}:{instance_id()}"
        self.key = keys.heartbeat(service, instance_id())
        self.ttl_s = ttl_s
        self.info = info  # JSON the process tells about itself, e.g. where its metrics are served
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{service}", daemon=True)

    def start(self) -> None:
        """Beat once now (so readiness is visible at once), then every third of the TTL."""
        self._beat()
        self._thread.start()

    def _beat(self) -> None:
        """Refresh the key, and its entry in the index of heartbeats (dropping entries that ran out)."""
        now_ms = int(time.time() * 1000)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.key, self.info, ex=self.ttl_s)
            pipe.zadd(keys.heartbeats(), {self.member: now_ms + self.ttl_s * 1000})
            pipe.zremrangebyscore(keys.heartbeats(), "-inf", now_ms)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._beat()
            except Exception as exc:  # keep beating through a Redis blip
                if not redis_outage.failed(exc, loop="heartbeat"):
                    log.warning("heartbeat.failed", error=str(exc))
            else:
                redis_outage.recovered()

    def stop(self) -> None:
        """Stop beating and remove the key, so the process is seen as gone at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.key)
                pipe.zrem(keys.heartbeats(), self.member)
                pipe.execute()
        except Exception as exc:
            log.warning("heartbeat.cleanup_failed", error=str(exc))
