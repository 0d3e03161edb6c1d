"""deploy/blue-green.sh: shellcheck, and its control flow against a recording kubectl stand-in (no cluster runs here).

The passing path, where the real smoke test goes through to a running stack, is in
tests/e2e/test_deploy.py; here the smoke test meets a gateway that is not ready.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.deploy.cluster import ROOT, SCRIPT, StandInCluster
from tests.tools import PIP_DEV, require

# What a failed track leaves behind and the script deletes: all that `render` makes of it.
TRACK_KINDS = "deployment,horizontalpodautoscaler,poddisruptionbudget"


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "not ready"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_ready_gateway() -> Iterator[str]:
    """A server that answers 503 to everything, as a gateway that never got ready; its host:port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "script", ["deploy/blue-green.sh", ".ci/run", "scripts/bootstrap.sh", "scripts/lock.sh", "scripts/test-tools.sh"]
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = require("shellcheck", PIP_DEV)
    result = subprocess.run([shellcheck, script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_replaces_only_the_name_track_and_image() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "render", "green", "registry.invalid/semaflow/gateway:1.2.3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    blue = (ROOT / "deploy" / "k8s" / "30-gateway.yaml").read_text().splitlines()
    green = result.stdout.splitlines()
    changed = [(b.strip(), g.strip()) for b, g in zip(blue, green, strict=True) if b != g]
    deployment = [
        ("name: gateway-blue", "name: gateway-green"),
        ("track: blue", "track: green"),
        ("track: blue", "track: green"),
        ("track: blue", "track: green"),
        ("image: semaflow/gateway:0.1.0", "image: registry.invalid/semaflow/gateway:1.2.3"),
    ]
    autoscaler = [
        ("name: gateway-blue", "name: gateway-green"),
        ("track: blue", "track: green"),
        ("name: gateway-blue", "name: gateway-green"),  # the Deployment it scales
    ]
    budget = [
        ("name: gateway-blue", "name: gateway-green"),
        ("track: blue", "track: green"),
        ("track: blue", "track: green"),  # the pods it covers
    ]
    assert changed == deployment + autoscaler + budget
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        ("Deployment", "gateway-green"),
        ("HorizontalPodAutoscaler", "gateway-green"),
        ("PodDisruptionBudget", "gateway-green"),
    ]


def test_a_failed_smoke_test_deletes_the_new_track_and_leaves_the_live_one(
    tmp_path: Path, not_ready_gateway: str
) -> None:
    # Given blue live, and green's Service leading to a gateway that never gets ready
    cluster = StandInCluster.create(tmp_path, live="blue", upstreams={"gateway-green": not_ready_gateway})
    # When green is deployed
    result = cluster.run("deploy", "1.2.3", env={"SEMAFLOW_SMOKE_API_KEY": "sf_test"})
    # Then the deploy fails after a real smoke test that reached green
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL GET /readyz: 503" in result.stdout
    assert "smoke test failed: deleting gateway-green; blue stays live" in result.stderr
    # and green was applied with the new image, rolled out, smoke-tested, deleted; the Service never switched
    assert cluster.verbs() == [
        "get service",
        "apply -f",
        "rollout status",
        "port-forward service/gateway-green",
        f"delete {TRACK_KINDS}",
    ]
    applied, autoscaler, budget = cluster.calls()[1]["applied"]
    assert applied["metadata"]["name"] == "gateway-green"
    assert applied["spec"]["template"]["spec"]["containers"][0]["image"] == "semaflow/gateway:1.2.3"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "gateway-green"
    assert budget["spec"]["selector"]["matchLabels"]["track"] == "green"
    assert all(call["namespace"] == "semaflow" for call in cluster.calls())
    assert cluster.state()["selector"] == "blue"
    assert cluster.state()["deployments"] == {"gateway-blue": "semaflow/gateway:0.1.0"}
    # with green's autoscaler and disruption budget
    assert cluster.state()["others"] == {"horizontalpodautoscaler": [], "poddisruptionbudget": []}
    # and the port-forward ended with the script: its local port takes no connection any more
    local_port = int(cluster.calls()[3]["args"][2].split(":")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", local_port), timeout=5):
        pass


def test_a_failed_rollout_deletes_the_new_track_without_a_smoke_test(tmp_path: Path) -> None:
    # Given green live and blue holding the version before it, when 2.0.0 never rolls out on blue
    cluster = StandInCluster.create(
        tmp_path,
        live="green",
        deployments={"gateway-blue": "semaflow/gateway:1.0.0", "gateway-green": "semaflow/gateway:1.1.0"},
        failing_rollouts=("gateway-blue",),
    )
    result = cluster.run("deploy", "2.0.0", env={"SEMAFLOW_SMOKE_API_KEY": "sf_test"})
    # Then blue is deleted without a smoke test, and green stays live and untouched
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rollout failed: deleting gateway-blue; green stays live" in result.stderr
    assert cluster.verbs() == ["get service", "apply -f", "rollout status", f"delete {TRACK_KINDS}"]
    assert cluster.state()["selector"] == "green"
    assert cluster.state()["deployments"] == {"gateway-green": "semaflow/gateway:1.1.0"}


def test_deploy_needs_a_smoke_test_key_before_it_touches_anything(tmp_path: Path) -> None:
    cluster = StandInCluster.create(tmp_path)
    result = cluster.run("deploy", "1.2.3", env={"SEMAFLOW_SMOKE_API_KEY": ""})
    assert result.returncode != 0
    assert "SEMAFLOW_SMOKE_API_KEY" in result.stderr
    assert cluster.calls() == []


def test_rollback_switches_the_service_back_to_the_kept_track(tmp_path: Path) -> None:
    cluster = StandInCluster.create(
        tmp_path,
        live="green",
        deployments={"gateway-blue": "semaflow/gateway:1.0.0", "gateway-green": "semaflow/gateway:1.1.0"},
    )
    result = cluster.run("rollback")
    assert result.returncode == 0, result.stderr
    assert cluster.verbs() == ["get service", "get deployment", "rollout status", "patch service"]
    assert cluster.state()["selector"] == "blue"
    assert len(cluster.state()["deployments"]) == 2  # green stays, to roll forward again


def test_rollback_without_the_other_track_changes_nothing(tmp_path: Path) -> None:
    cluster = StandInCluster.create(tmp_path, live="blue")
    result = cluster.run("rollback")
    assert result.returncode == 1
    assert "no gateway-green to roll back to" in result.stderr
    assert "patch service" not in cluster.verbs()
    assert cluster.state()["selector"] == "blue"


def test_without_a_verb_it_prints_its_usage(tmp_path: Path) -> None:
    result = StandInCluster.create(tmp_path).run()
    assert result.returncode == 2
    assert "deploy/blue-green.sh deploy TAG" in result.stderr
