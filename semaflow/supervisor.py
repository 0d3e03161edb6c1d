"""Runs each service as its own OS process, restarts the ones that crash, stops them all gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

# A child that ran this long before crashing is restarted at once; crash loops back off to 30 s.
STABLE_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0


def next_backoff(ran_s: float, previous_s: float) -> float:
    """Seconds to wait before restarting a process that exited after running ``ran_s`` seconds.

    At once after a stable run; then 1 s, doubling with every quick exit in a row, up to ``MAX_BACKOFF_S``.
    """
    return 0.0 if ran_s >= STABLE_AFTER_S else min(MAX_BACKOFF_S, max(1.0, previous_s * 2))


@dataclass
class Child:
    """One supervised service process."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process."""
        return self.process.pid if self.process else None


@dataclass
class Supervisor:
    """Starts children with a shared environment and keeps them running."""

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def add(self, name: str, module: str) -> Child:
        """Supervise ``python -m module`` under ``name``."""
        child = Child(name, [sys.executable, "-m", module])
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        # Own process group: a Ctrl-C at the terminal reaches only the supervisor, which then
        # stops the children in order instead of all of them dying at once.
        child.process = subprocess.Popen(child.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("service.spawned", service=child.name, pid=child.pid)

    def start(self) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child)

    def poll(self) -> None:
        """Restart children that exited (with backoff for crash loops); call periodically."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                continue
            code = child.process.poll()
            if code is None:
                continue
            if child.restart_at is None:
                ran = now - child.started_at
                child.backoff_s = next_backoff(ran, child.backoff_s)
                child.restart_at = now + child.backoff_s
                log.error(
                    "service.crashed", service=child.name, pid=child.pid, exit_code=code, restart_in_s=child.backoff_s
                )
            if now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                log.warning("service.restarted", service=child.name, pid=child.pid, restarts=child.restarts)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM every child, wait up to ``timeout_s`` for all, then SIGKILL the rest."""
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service.killed", service=child.name, pid=child.pid)
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        log.info("services.stopped")
