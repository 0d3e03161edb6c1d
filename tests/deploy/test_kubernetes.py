"""The Kubernetes manifests: valid against the API schemas (kubernetes-validate --strict, offline), and wired right."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.cluster import SCRIPT
from tests.deploy.manifests import K8S, MANIFESTS, SEMAFLOW, WORKERS, by_kind, resources, selects
from tests.tools import PIP_DEV, require

#: Kinds of custom resources, which kubernetes-validate has no schema for (test_scaling.py checks them).
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = require("kubernetes-validate", PIP_DEV)
    return subprocess.run(
        [tool, "--strict", *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    assert len(MANIFESTS) >= 10
    result = kubernetes_validate(*MANIFESTS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # every resource was checked against a schema, bar the custom ones
    checked = [r for r in resources() if (r["apiVersion"], r["kind"]) not in CUSTOM_KINDS]
    assert output.count(" passed for resource ") == len(checked), output
    assert {(r["apiVersion"], r["kind"]) for r in resources()} >= CUSTOM_KINDS


def test_validation_does_not_pass_an_unknown_built_in_kind_in_silence(tmp_path: Path) -> None:
    # Given the disruption budgets under an API version Kubernetes never had
    broken = tmp_path / "budgets.yaml"
    broken.write_text((K8S / "50-disruption-budgets.yaml").read_text().replace("policy/v1", "policy/v7"))
    # Then no resource of that file passes: the count above would catch it
    result = kubernetes_validate(broken)
    assert " passed for resource " not in result.stdout + result.stderr


def test_the_green_track_the_script_renders_is_valid_too(tmp_path: Path) -> None:
    rendered = subprocess.run(
        ["bash", str(SCRIPT), "render", "green", "semaflow/gateway:1.2.3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    path = tmp_path / "gateway-green.yaml"
    path.write_text(rendered)
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_catches_a_misspelt_field(tmp_path: Path) -> None:
    broken = tmp_path / "gateway.yaml"
    broken.write_text((K8S / "30-gateway.yaml").read_text().replace("readinessProbe:", "readinesProbe:"))
    result = kubernetes_validate(broken)
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


def test_everything_lives_in_the_semaflow_namespace() -> None:
    for resource in resources():
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "semaflow", resource["metadata"]["name"]


def test_every_deployment_runs_locked_down_from_a_pinned_image_and_selects_its_own_pods() -> None:
    deployments = by_kind("Deployment")
    assert set(deployments) == {*SEMAFLOW, "otel-collector"}
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]), name
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert repository and tag and tag != "latest", container["image"]
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert "memory" in container["resources"]["limits"], name


def test_five_semaflow_deployments_with_probes_resources_and_a_locked_down_security_context() -> None:
    deployments = by_kind("Deployment")
    scaled_objects = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind("ScaledObject").values()}
    for name in SEMAFLOW:
        deployment = deployments[name]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        assert "memory" in container["resources"]["limits"], name
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}, name  # the only writable place
        refs = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
        assert refs == ["semaflow-config", "semaflow-credentials"], name
        if name in scaled_objects:
            # KEDA owns the count: a count here would reset it on every apply
            assert "replicas" not in deployment["spec"], name
            assert scaled_objects[name]["spec"]["minReplicaCount"] >= 2, name
        else:
            assert deployment["spec"]["replicas"] >= 2, name


def probe(container: dict[str, Any], kind: str) -> tuple[str, int | str]:
    get = container[kind]["httpGet"]
    return get["path"], get["port"]


def test_the_gateway_is_ready_on_readyz_and_alive_on_healthz() -> None:
    (container,) = by_kind("Deployment")["gateway-blue"]["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}]
    assert probe(container, "readinessProbe") == ("/readyz", "http")
    assert probe(container, "livenessProbe") == ("/healthz", "http")
    assert container["image"].startswith("semaflow/gateway:")


def test_the_gateway_is_scraped_on_its_internal_metrics_port() -> None:
    # the public /metrics on 8080 leaves out the series labelled by tenant or collection
    template = by_kind("Deployment")["gateway-blue"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("9100", "/metrics")
    assert by_kind("ConfigMap")["semaflow-config"]["data"]["SEMAFLOW_METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_probed_on_healthz_of_its_metrics_port(name: str) -> None:
    (container,) = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
    assert probe(container, "readinessProbe") == ("/healthz", "metrics")
    assert probe(container, "livenessProbe") == ("/healthz", "metrics")
    assert container["image"].startswith(f"semaflow/{name}:")
    assert {"name": "OTEL_SERVICE_NAME", "value": f"semaflow-{name}"} in container["env"]


def test_the_live_service_selects_one_track_and_each_track_has_its_own() -> None:
    services = by_kind("Service")
    gateway_labels = by_kind("Deployment")["gateway-blue"]["spec"]["template"]["metadata"]["labels"]
    assert services["gateway"]["spec"]["selector"] == {"app.kubernetes.io/name": "semaflow-gateway", "track": "blue"}
    assert services["gateway"]["spec"]["selector"].items() <= gateway_labels.items()
    for track in ("blue", "green"):
        assert services[f"gateway-{track}"]["spec"]["selector"]["track"] == track
    workers = services["semaflow-workers"]
    assert workers["spec"]["clusterIP"] == "None"
    assert workers["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics"}]


def test_the_config_map_holds_settings_and_the_secret_template_holds_only_placeholders() -> None:
    config = by_kind("ConfigMap")["semaflow-config"]["data"]
    assert config["SEMAFLOW_METRICS_PORT"] == "9100"
    assert config["OTEL_TRACES_EXPORTER"] == "otlp"
    assert {"SEMAFLOW_REDIS_URL", "SEMAFLOW_S3_BUCKET", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= config.keys()
    assert not [k for k in config if "SECRET" in k or "PASSWORD" in k]
    secret = by_kind("Secret")["semaflow-credentials"]
    assert set(secret["stringData"].values()) == {"CHANGE-ME"}
    assert {"SEMAFLOW_S3_ACCESS_KEY_ID", "SEMAFLOW_S3_SECRET_ACCESS_KEY"} <= secret["stringData"].keys()
