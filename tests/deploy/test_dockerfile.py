"""deploy/Dockerfile: hadolint, the stages and targets it must have, and its health probes run for real.

No Docker engine runs here, so the image is not built; each target's HEALTHCHECK command is run
as Docker would run it, against a local server that answers as the service would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from semaflow.redis_server import free_port
from tests.tools import PIP_DEV, ROOT, require

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SERVICES = ("gateway", "embedder", "indexer", "notifier", "scheduler")


@dataclass
class Stage:
    """One build stage: its base, its name, and its instructions as (keyword, arguments)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = found[name.strip()] = Stage(base.strip(), name.strip())
        else:
            assert current is not None, line
            current.instructions.append((keyword, rest.strip()))
    return found


def lineage(all_stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built on, nearest first."""
    chain = [all_stages[name]]
    while chain[-1].base in all_stages:
        chain.append(all_stages[chain[-1].base])
    return chain


def healthcheck(stage: Stage) -> list[str]:
    (check,) = stage.args("HEALTHCHECK")
    command = check[check.index("CMD ") + 4 :]
    argv: list[str] = json.loads(command)
    return argv


def test_hadolint_passes() -> None:
    hadolint = require("hadolint", PIP_DEV)
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_target_per_service_on_a_slim_non_root_runtime() -> None:
    all_stages = stages()
    assert set(SERVICES) <= set(all_stages)
    for name in SERVICES:
        chain = lineage(all_stages, name)
        assert chain[-1].base == "python:3.11-slim", name
        users = [u for stage in reversed(chain) for u in stage.args("USER")]
        assert users and users[-1].split(":")[0] not in ("root", "0"), name
        assert all_stages[name].args("CMD") == [f'["python", "-m", "services.{name}"]']
        env = " ".join(e for stage in chain for e in stage.args("ENV"))
        assert "HF_HUB_OFFLINE=1" in env
        assert f"OTEL_SERVICE_NAME=semaflow-{name}" in env


def test_the_builder_installs_the_pinned_cpu_torch_then_semaflow_into_a_venv() -> None:
    builder = stages()["builder"]
    runs = builder.args("RUN")
    assert "python -m venv /opt/venv" in runs
    # PyTorch's own index of CPU wheels (its .../whl/cpu), for the pinned version.
    torch = [r for r in runs if '"torch==2.13.0"' in r]
    assert len(torch) == 1
    assert torch[0].split("--index-url ")[1].split()[0].endswith("/whl/cpu")
    assert any(r.startswith("pip install . ") for r in runs)
    runtime = stages()["runtime"]
    assert "--from=builder /opt/venv /opt/venv" in runtime.args("COPY")


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {line.removeprefix("!").rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for stage in stages().values():
        for copy in stage.args("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert source.rstrip("/").removeprefix("./") in allowed, source


class _Service(BaseHTTPRequestHandler):
    status = 200
    path_ok = "/healthz"

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == self.path_ok else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(path: str, status: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    handler = type("Handler", (_Service,), {"status": status, "path_ok": path})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def probe_server(request: pytest.FixtureRequest) -> Iterator[int]:
    path, status = request.param
    server, thread = serve(path, status)
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join()


def run_probe(target: str, port: int) -> int:
    argv = healthcheck(stages()[target])
    assert argv[0] == "python"
    env_var = "SEMAFLOW_PORT" if target == "gateway" else "SEMAFLOW_METRICS_PORT"
    return subprocess.run(
        [sys.executable, *argv[1:]], env={env_var: str(port)}, capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.parametrize("probe_server", [("/readyz", 200)], indirect=True)
def test_the_gateway_probe_passes_when_ready(probe_server: int) -> None:
    assert run_probe("gateway", probe_server) == 0


@pytest.mark.parametrize("probe_server", [("/readyz", 503)], indirect=True)
def test_the_gateway_probe_fails_when_not_ready(probe_server: int) -> None:
    assert run_probe("gateway", probe_server) != 0


@pytest.mark.parametrize("target", SERVICES[1:])
@pytest.mark.parametrize("probe_server", [("/healthz", 200)], indirect=True)
def test_a_worker_probe_passes_when_its_metrics_port_says_healthy(target: str, probe_server: int) -> None:
    assert run_probe(target, probe_server) == 0


@pytest.mark.parametrize("target", SERVICES[1:])
@pytest.mark.parametrize("probe_server", [("/healthz", 500)], indirect=True)
def test_a_worker_probe_fails_when_unhealthy(target: str, probe_server: int) -> None:
    assert run_probe(target, probe_server) != 0


@pytest.mark.parametrize("target", SERVICES)
def test_a_probe_fails_when_nothing_answers(target: str) -> None:
    assert run_probe(target, free_port()) != 0
