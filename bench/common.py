"""Shared helpers of the hand-run benchmarks: start/stop a stack, load SciFact, percentiles, tables.

Not a test module: the scripts next to it import it (``python bench/ingest.py`` puts ``bench/`` on
``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from semaflow.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIM = 384  # all-MiniLM-L6-v2's vectors


# --- data -------------------------------------------------------------------------------------


def load_corpus(data: Path) -> list[tuple[str, str]]:
    """``(id, text)`` of every SciFact document; text is ``(title + " " + text).strip()`` as in BEIR."""
    out = []
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out.append((str(row["_id"]), (row.get("title", "") + " " + row.get("text", "")).strip()))
    return out


def load_queries(data: Path) -> list[str]:
    """Every SciFact query text (claims)."""
    with (data / "queries.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


# --- statistics and output --------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain, aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=False))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-.")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"results written to {path}")


def environment() -> dict[str, Any]:
    """What the numbers depend on."""
    import platform

    env = {
        "python": platform.python_version(),
        "cpus_affinity": len(os.sched_getaffinity(0)),
        "semaflow_env": {k: v for k, v in os.environ.items() if k.startswith("SEMAFLOW_")},
    }
    try:
        import faiss
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["faiss"] = faiss.__version__
    except ImportError:
        pass
    return env


def export_tree(rev: str, root: Path) -> Path:
    """The tree of git revision ``rev`` (``git archive``) in a new folder under ``root``: the code a benchmark
    runs as its reference (its services, or its functions in a child process with it on ``PYTHONPATH``)."""
    tree = root / f"tree-{rev.replace('/', '-')}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def log(msg: str) -> None:
    """Progress to stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- CPU accounting (to wait for an idle stack) -----------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (by /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User+system CPU seconds consumed so far by ``pids``."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (from /proc/stat; includes steal)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def self_cpu_seconds() -> float:
    """CPU seconds of this process (all threads)."""
    return time.process_time()


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    """A ``semaflow up`` process tree on a free port and a temporary data directory."""

    env: dict[str, str] = field(default_factory=dict)
    keep_data: bool = False
    cwd: Path = REPO  # the tree whose code runs (``python -m semaflow`` imports from here first)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    api_key: str = ""
    data_dir: Path | None = None
    log_path: Path | None = None
    _root: Path | None = None
    _log_fh: Any = None
    pids: dict[str, int] = field(default_factory=dict)
    idle_use: float | None = None  # cores the idle tree uses where that is above wait_idle's cpu_frac

    def start(self, timeout_s: float = 300.0) -> Stack:
        # mkdtemp, not TemporaryDirectory: the latter's finalizer deletes the folder at exit even with keep_data.
        root = self._root = Path(tempfile.mkdtemp(prefix="semaflow-bench-"))
        self.data_dir = root / "data"
        self.log_path = root / "stack.log"
        self._log_fh = self.log_path.open("wb")
        port = free_port()
        # Benchmarks send far more than the default rate limits allow: off unless the caller's env says otherwise.
        env = {"SEMAFLOW_RATE_LIMIT_ENABLED": "false", **os.environ, **self.env}
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semaflow", "up", "--port", str(port), "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE,
            stderr=self._log_fh,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
        )
        assert self.proc.stdout is not None
        line = _readline_with_timeout(self.proc, timeout_s)
        if not line.startswith("semaflow ready: "):
            self.stop()
            raise RuntimeError(f"stack did not become ready (got {line!r}); see {self.log_path}")
        # "semaflow ready: http://HOST:PORT api_key=KEY"
        rest = line[len("semaflow ready: ") :].strip()
        url, _, key = rest.partition(" api_key=")
        self.url, self.api_key = url.strip(), key.strip()
        self.pids = self._service_pids()
        log(f"stack ready in {time.monotonic() - started:.1f}s at {self.url} (log {self.log_path})")
        return self

    def _service_pids(self) -> dict[str, int]:
        assert self.proc is not None
        out = {"supervisor": self.proc.pid}
        for pid in process_tree(self.proc.pid)[1:]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [c.decode(errors="replace") for c in cmd if c]
            name = next((a.split(".", 1)[1] for a in args if a.startswith("services.")), None)
            out[name or ("redis" if any("redis" in a for a in args) else f"pid{pid}")] = pid
        return out

    def tree(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc else []

    def cpu_by_service(self) -> dict[str, float]:
        return {name: cpu_seconds([pid]) for name, pid in self.pids.items()}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def wait_idle(
        self,
        session: aiohttp.ClientSession,
        *,
        max_wait_s: float = 300.0,
        cpu_frac: float = 0.10,
        window_s: float = 1.0,
    ) -> float:
        """Wait until the gateway's query model is loaded and the whole tree uses < ``cpu_frac`` of a core.

        An idle stack still polls its queues and sends heartbeats: 0.07-0.08 of a core on one machine, 0.19 on a
        slower one, where no window would ever fall under ``cpu_frac``. So the first time the tree's use holds
        steady (three windows in a row within 20 % of each other, under half a core: no merge or model load is
        running) that use is taken as the stack's idle use, and from then on a window under 1.5 times it also
        counts as idle."""
        started = time.monotonic()
        deadline = started + max_wait_s
        while time.monotonic() < deadline:
            try:
                async with session.get(self.url + "/readyz") as resp:
                    body = await resp.json()
                if resp.status == 200 and body.get("checks", {}).get("query_model") == "ok":
                    break
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError("gateway query model did not load in time")
        rates: list[float] = []
        while time.monotonic() < deadline:
            pids = self.tree()
            before = cpu_seconds(pids)
            await asyncio.sleep(window_s)
            used = (cpu_seconds(pids) - before) / window_s
            rates.append(used)
            if used < cpu_frac or (self.idle_use is not None and used < 1.5 * self.idle_use):
                return time.monotonic() - started
            last = rates[-3:]
            if self.idle_use is None and len(last) == 3 and max(last) < 0.5 and max(last) <= 1.2 * min(last):
                self.idle_use = min(last)
                log(f"the idle stack uses {self.idle_use:.2f} of a core here (above {cpu_frac}): taken as idle")
                return time.monotonic() - started
        raise RuntimeError("stack did not go idle")

    def stop(self, timeout_s: float = 90.0) -> None:
        """SIGTERM the supervisor and wait for the whole tree to exit (SIGKILL only our own leftovers)."""
        if self.proc is None:
            return
        tree = self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log("stack did not stop in time: killing the processes it started")
                for pid in tree:
                    _kill(pid)
                self.proc.wait()
        for pid in tree[1:]:  # children the supervisor should have reaped; never anyone else's
            if _alive(pid):
                log(f"leftover process {pid} after stop: killing it")
                _kill(pid)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._log_fh:
            self._log_fh.close()
        if self._root is not None and not self.keep_data:
            shutil.rmtree(self._root, ignore_errors=True)
        elif self._root is not None:
            log(f"kept stack data and log in {self._root}")
        self.proc = None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _readline_with_timeout(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None and not sel.select(0):
            break
        if sel.select(0.5):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode(errors="replace")
    return buf.decode(errors="replace")


async def check(resp: aiohttp.ClientResponse, *expected: int) -> Any:
    """The JSON body of a response with one of the expected statuses, else an error with the body."""
    if resp.status not in expected:
        raise RuntimeError(f"{resp.method} {resp.url} -> {resp.status}: {(await resp.text())[:500]}")
    return await resp.json()


async def wait_jobs(stack: Stack, http: aiohttp.ClientSession, job_ids: list[str], late: Callable[[], float]) -> None:
    """Long-poll each job in turn until it succeeded (``late`` raises once the time is up); a failed job raises."""
    for job_id in job_ids:
        while True:
            async with http.get(f"{stack.url}/v1/jobs/{job_id}?wait=30", headers=stack.headers) as resp:
                job = await check(resp, 200)
            if job["state"] == "failed":
                raise RuntimeError(f"job {job_id} failed: {job.get('error')}")
            if job["state"] == "succeeded":
                break
            late()


async def wait_searchable(
    stack: Stack,
    http: aiohttp.ClientSession,
    name: str,
    job_ids: list[str],
    documents: int,
    *,
    t0: float,
    poll_s: float = 0.05,
    timeout_s: float = 3600.0,
) -> tuple[dict[str, Any], float | None]:
    """Wait until every job succeeded, the collection counts ``documents``, and a search answers
    from that index version. Returns the collection's info and when (seconds after ``t0``, a
    ``perf_counter`` reading) its first documents became visible.

    Waits as a client of the API does, not by polling: each job in turn is long-polled
    (``GET /v1/jobs/{id}?wait=``, answered when its state or progress changes), so the stack spends
    next to nothing on the benchmark while it works. The collection is read once a second until its
    first documents show, and every ``poll_s`` once every job has succeeded, until it counts them all
    and a search answers from its version.
    """
    base = f"{stack.url}/v1/collections/{name}"
    first_visible: float | None = None

    def late() -> float:
        now = time.perf_counter() - t0
        if now > timeout_s:
            raise RuntimeError(f"not searchable after {timeout_s:.0f} s")
        return now

    async def collection() -> dict[str, Any]:
        nonlocal first_visible
        async with http.get(base, headers=stack.headers) as resp:
            info: dict[str, Any] = await check(resp, 200)
        if first_visible is None and info["documents"] > 0:
            first_visible = time.perf_counter() - t0
        return info

    async def watch_first() -> None:
        while first_visible is None:
            await collection()
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_first())
    try:
        await wait_jobs(stack, http, job_ids, late)
        while True:
            info = await collection()
            if info["documents"] >= documents:
                probe = {"vector": [1.0] + [0.0] * (DIM - 1), "k": 1}
                async with http.post(base + "/search", json=probe, headers=stack.headers) as resp:
                    found = await check(resp, 200)
                if found["index_version"] == info["index_version"] and found["results"]:
                    return info, first_visible
            late()
            await asyncio.sleep(poll_s)
    finally:
        watcher.cancel()


def session(connections: int = 100, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )
