"""A whole stack started the way a user starts it: ``semaflow up`` as a process, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from semaflow.redis_server import free_port

READY_TIMEOUT_S = 180.0


@dataclass
class Stack:
    """A running ``semaflow up``."""

    process: subprocess.Popen[bytes]
    url: str
    api_key: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
            finally:
                if self.process.stdout is not None:
                    self.process.stdout.close()
        return self.process.returncode


def start_stack(data_dir: Path, *, extra_env: dict[str, str] | None = None) -> Stack:
    """Run ``semaflow up`` on a free port and wait for its ready line (fails with its logs if it never comes)."""
    port = free_port()
    log = data_dir.parent / f"{data_dir.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
    # Rate limits off unless a test asks for them: the tests poll far faster than the default budgets.
    env.update(
        {
            "SEMAFLOW_LOG_JSON": "true",
            "SEMAFLOW_WORKER_POLL_MS": "50",
            # No hourly compaction in the middle of a test that counts segments or versions.
            "SEMAFLOW_SCHEDULES": '{"compaction": {"enabled": false}}',
            "SEMAFLOW_COMPACTION_ON_PUBLISH": "false",
            # A tier of three segments is full: what a test runs by hand merges the few batches it wrote.
            "SEMAFLOW_COMPACTION_MERGE_FACTOR": "3",
            "SEMAFLOW_RATE_LIMIT_ENABLED": "false",
            # The model as torch runs it: no conversion and start-up timing in every stack (the backend
            # choice has tests of its own, tests/integration/shared/test_embedding_backends.py).
            "SEMAFLOW_EMBEDDER_BACKEND": "torch",
            **(extra_env or {}),
        }
    )
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "semaflow", "up", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    assert process.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    while not line.endswith(b"\n"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            process.stdout.close()
            pytest.fail(f"semaflow up never became ready; its log:\n{log.read_text(errors='replace')[-20_000:]}")
        if sel.select(timeout=0.5):
            line += process.stdout.read1(4096)  # type: ignore[attr-defined]
    sel.close()
    text = line.decode().strip()
    assert text.startswith("semaflow ready: "), text
    url, key = text.removeprefix("semaflow ready: ").split(" api_key=")
    assert url == f"http://127.0.0.1:{port}"
    return Stack(process, url, key, log)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by every test that uses it in a test process (booting one takes ~15-30 s, mostly
    loading the model); each test works in collections of its own. Webhooks may reach 127.0.0.1; the gateway
    refreshes its index statistics every half second (the maintenance test waits for them).
    """
    running = start_stack(
        tmp_path_factory.mktemp("stack") / "data",
        extra_env={"SEMAFLOW_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "SEMAFLOW_STATS_REFRESH_S": "0.5"},
    )
    yield running
    code = running.stop()
    assert code == 0, running.logs()


# --- driving a stack over HTTP ------------------------------------------------------------------


WORDS = [
    "river",
    "mountain",
    "quantum",
    "protein",
    "harbour",
    "violin",
    "algebra",
    "glacier",
    "lantern",
    "orbit",
    "pepper",
    "cathedral",
    "neuron",
    "desert",
    "typhoon",
    "marble",
    "falcon",
    "ledger",
    "copper",
    "meadow",
    "vaccine",
    "satellite",
    "tundra",
    "compass",
    "saffron",
    "turbine",
    "archive",
    "canyon",
    "enzyme",
    "festival",
    "granite",
    "horizon",
    "iceberg",
    "jasmine",
    "kernel",
    "lagoon",
    "mosaic",
    "nebula",
    "orchard",
    "pendulum",
    "quarry",
    "reactor",
    "sapphire",
    "telescope",
    "umbrella",
    "volcano",
    "walnut",
    "yacht",
    "zephyr",
    "bakery",
    "cobalt",
    "dolphin",
    "ember",
    "fossil",
    "gravity",
    "hammock",
    "island",
    "jungle",
    "kettle",
    "lighthouse",
    "magnet",
    "nectar",
    "oyster",
    "pyramid",
    "quilt",
    "rocket",
]


def corpus(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` distinct pseudo-sentences (deterministic)."""
    rng = random.Random(seed)
    return [
        {"id": f"{prefix}{i}", "text": " ".join(rng.choices(WORDS, k=12)), "metadata": {"i": i, "prefix": prefix}}
        for i in range(n)
    ]


async def wait_job(session: aiohttp.ClientSession, stack: Stack, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(f"{stack.url}/v1/jobs/{job_id}", headers=stack.auth) as resp:
            assert resp.status == 200
            job: dict[str, Any] = await resp.json()
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", job
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}\n{stack.logs()}"
        await asyncio.sleep(0.1)


async def ingest(session: aiohttp.ClientSession, stack: Stack, coll: str, docs: list[dict[str, Any]]) -> str:
    async with session.post(
        f"{stack.url}/v1/collections/{coll}/documents", json={"documents": docs}, headers=stack.auth
    ) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["job_id"])


async def search(session: aiohttp.ClientSession, stack: Stack, coll: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{stack.url}/v1/collections/{coll}/search", json=body, headers=stack.auth) as r:
        assert r.status == 200, await r.text()
        out: dict[str, Any] = await r.json()
        return out
