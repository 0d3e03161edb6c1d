"""The deployment scripts against a running stack: deploy/smoke.py for real, and blue-green's passing path.

blue-green.sh runs against the recording kubectl stand-in (no cluster runs here), whose
port-forward relays to this stack's gateway, so the smoke test that gates the switch is real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from semaflow.redis_server import free_port
from tests.deploy.cluster import ROOT, StandInCluster
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

SMOKE = ROOT / "deploy" / "smoke.py"


def smoke(url: str, key: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE), url, key, "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )


def collections(stack: Stack) -> list[str]:
    request = urllib.request.Request(f"{stack.url}/v1/collections", headers=stack.auth)
    with urllib.request.urlopen(request, timeout=10) as answer:
        listed = json.load(answer)["collections"]
    return [c["name"] if isinstance(c, dict) else str(c) for c in listed]


def test_the_smoke_test_passes_against_a_running_stack_and_leaves_nothing_behind(stack: Stack) -> None:
    result = smoke(stack.url, stack.api_key)
    assert result.returncode == 0, result.stdout + result.stderr + stack.logs()
    steps = [line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert steps == ["readyz", "create", "ingest", "job", "search", "delete"]
    assert "cat first" in result.stdout
    assert not [name for name in collections(stack) if name.startswith("smoke-")]


def test_the_smoke_test_fails_with_a_key_the_gateway_refuses(stack: Stack) -> None:
    result = smoke(stack.url, "sf_not-a-key")
    assert result.returncode == 1
    assert "FAIL PUT /v1/collections/smoke-" in result.stdout
    assert ": 401 " in result.stdout


def test_the_smoke_test_fails_when_no_gateway_answers() -> None:
    result = smoke(f"http://127.0.0.1:{free_port()}", "sf_any", timeout=20)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL GET /readyz")


def test_blue_green_switches_only_after_the_new_track_passed_its_smoke_test(stack: Stack, tmp_path: Path) -> None:
    # Given blue live, and each track's Service leading (through the stand-in) to the running gateway
    gateway = urlsplit(stack.url).netloc
    cluster = StandInCluster.create(
        tmp_path, live="blue", upstreams={"gateway-blue": gateway, "gateway-green": gateway}
    )
    env = {"SEMAFLOW_SMOKE_API_KEY": stack.api_key}

    # When 1.1.0 is deployed, then green gets it, passes its smoke test, and goes live; blue is kept
    first = cluster.run("deploy", "1.1.0", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "smoke test passed" in first.stdout
    assert cluster.verbs() == [
        "get service",
        "apply -f",
        "rollout status",
        "port-forward service/gateway-green",
        "patch service",
    ]
    assert cluster.state()["selector"] == "green"
    assert cluster.state()["deployments"] == {
        "gateway-blue": "semaflow/gateway:0.1.0",
        "gateway-green": "semaflow/gateway:1.1.0",
    }

    # When 1.2.0 follows, then it goes to blue, the idle track, and blue goes live again
    second = cluster.run("deploy", "1.2.0", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert cluster.calls()[-2]["args"][1] == "service/gateway-blue"  # the smoke test went to blue
    assert cluster.state()["selector"] == "blue"
    assert cluster.state()["deployments"]["gateway-blue"] == "semaflow/gateway:1.2.0"

    # And a rollback returns to green, which still runs 1.1.0
    back = cluster.run("rollback")
    assert back.returncode == 0, back.stderr
    assert cluster.state()["selector"] == "green"
