"""Autoscaling, disruption budgets, the Ingress and the trace collector of deploy/k8s/: each wired to what exists.

kubernetes-validate checks the built-in kinds against their schemas (test_kubernetes.py); here the
references between resources are followed (an autoscaler's target, a budget's or a Service's
selector, an Ingress backend, the exporter endpoint), KEDA's ScaledObject is checked field by field
(no schema for it offline), and its Prometheus query is parsed by promtool and held to the metrics
contract.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.manifests import SEMAFLOW, WORKERS, by_kind, pod_labels, selected_deployments, selects
from tests.observability.contract import Contract
from tests.observability.promql import parse
from tests.tools import PROMTOOL, require

#: The fields of a ScaledObject's spec (KEDA 2.x); anything else is a typo KEDA would reject.
SCALED_OBJECT_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
PROMETHEUS_TRIGGER_FIELDS = {
    "serverAddress",
    "query",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "queryParameters",
    "unsafeSsl",
}


def replica_range(name: str) -> tuple[int, int]:
    """The fewest and most pods a Deployment runs: its autoscaler's range, or its fixed count."""
    for hpa in by_kind("HorizontalPodAutoscaler").values():
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    for scaled in by_kind("ScaledObject").values():
        if scaled["spec"]["scaleTargetRef"]["name"] == name:
            return scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]
    replicas: int = by_kind("Deployment")[name]["spec"]["replicas"]
    return replicas, replicas


def allowed_disruptions(budget: dict[str, Any], pods: int) -> int:
    """How many of ``pods`` healthy pods the budget lets a drain evict at once."""
    spec = budget["spec"]
    if "maxUnavailable" in spec:
        return min(pods, int(spec["maxUnavailable"]))
    return max(0, pods - int(spec["minAvailable"]))


# --- the gateway's HorizontalPodAutoscaler --------------------------------------------------------


def test_the_gateway_scales_on_cpu_between_two_and_ten() -> None:
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "gateway-blue")
    assert target["name"] in by_kind("Deployment")
    assert hpa["metadata"]["name"] == target["name"]  # blue-green.sh renders both under the track's name
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 90
    # a utilization is a share of the request: every container must ask for CPU
    for container in by_kind("Deployment")["gateway-blue"]["spec"]["template"]["spec"]["containers"]:
        assert "cpu" in container["resources"]["requests"]
    # scaling down waits out short lulls (a new replica loads the indexes before it is ready)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 120


def test_a_new_gateway_track_starts_with_the_autoscalers_minimum() -> None:
    # The Deployment's own count is what a new track rolls out with before it goes live.
    assert by_kind("Deployment")["gateway-blue"]["spec"]["replicas"] == replica_range("gateway-blue")[0]


# --- KEDA on the embed queue --------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder_scaling() -> dict[str, Any]:
    (scaled,) = by_kind("ScaledObject").values()
    return scaled


def test_the_embedders_scaled_object_targets_the_embedder_deployment(embedder_scaling: dict[str, Any]) -> None:
    assert embedder_scaling["apiVersion"] == "keda.sh/v1alpha1"
    spec = embedder_scaling["spec"]
    assert spec.keys() <= SCALED_OBJECT_FIELDS, spec.keys() - SCALED_OBJECT_FIELDS
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "embedder")
    assert target["name"] in by_kind("Deployment")
    # one autoscaler per Deployment: KEDA's own HPA and another would fight
    hpa_targets = [h["spec"]["scaleTargetRef"]["name"] for h in by_kind("HorizontalPodAutoscaler").values()]
    assert "embedder" not in hpa_targets


def test_the_embedders_keep_two_and_grow_to_ten_slowly_shrinking(embedder_scaling: dict[str, Any]) -> None:
    spec = embedder_scaling["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    for field in ("pollingInterval", "cooldownPeriod"):
        assert isinstance(spec[field], int) and spec[field] > 0, field
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 120
    # one embedder at a time, at most one a minute
    for policy in scale_down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] == 1 and policy["periodSeconds"] >= 60


def test_the_trigger_asks_prometheus_for_the_embed_queues_outstanding_work(embedder_scaling: dict[str, Any]) -> None:
    (trigger,) = embedder_scaling["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"  # per embedder; fallback needs it too
    metadata = trigger["metadata"]
    assert metadata.keys() <= PROMETHEUS_TRIGGER_FIELDS, metadata.keys() - PROMETHEUS_TRIGGER_FIELDS
    # KEDA's trigger metadata is a map of strings: a bare number or boolean is refused
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    assert float(metadata["threshold"]) > 0
    assert metadata["ignoreNullValues"] == "false"
    address = urlsplit(metadata["serverAddress"])
    assert address.scheme in ("http", "https") and address.hostname and address.port
    # the query reads the gateway's cluster gauges for the embed queue, and only those
    contract = Contract.load()
    usage = parse(metadata["query"])
    assert {s.metric for s in usage.selectors} == {"semaflow_queue_depth", "semaflow_queue_in_flight"}
    for selector in usage.selectors:
        family = contract.family(selector.metric)
        assert family is not None, selector.metric
        assert "gateway" in family.exporters, selector.metric
        assert [(m.label, m.op, m.value) for m in selector.matchers] == [("queue", "=", "embed")]
        assert family.admits("queue", "=", "embed")


def test_the_trigger_query_is_valid_promql(embedder_scaling: dict[str, Any], tmp_path: Path) -> None:
    promtool = require("promtool", PROMTOOL)
    (trigger,) = embedder_scaling["spec"]["triggers"]
    rules = {"groups": [{"name": "keda", "rules": [{"record": "keda:embedder", "expr": trigger["metadata"]["query"]}]}]}
    path = tmp_path / "keda.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_threshold_sizes_the_embedders_to_the_work(embedder_scaling: dict[str, Any]) -> None:
    # KEDA (through the HPA) asks for ceil(outstanding / threshold) embedders, within the range.
    spec = embedder_scaling["spec"]
    threshold = float(spec["triggers"][0]["metadata"]["threshold"])
    low, high = int(spec["minReplicaCount"]), int(spec["maxReplicaCount"])

    def wanted(outstanding: int) -> int:
        return min(high, max(low, math.ceil(outstanding / threshold)))

    assert wanted(0) == 2
    assert wanted(40) == 8  # the example in docs/operations/deploy.md
    assert wanted(10_000) == 10


# --- disruption budgets ---------------------------------------------------------------------------


def test_every_semaflow_deployment_has_one_budget_that_selects_only_its_pods() -> None:
    budgets = by_kind("PodDisruptionBudget")
    covered: dict[str, list[str]] = {}
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        (deployment,) = selected_deployments(budget["spec"]["selector"]["matchLabels"])
        covered.setdefault(deployment, []).append(name)
        assert name == deployment, f"budget {name} covers {deployment}"
    assert {name: len(found) for name, found in covered.items()} == dict.fromkeys(SEMAFLOW, 1)


@pytest.mark.parametrize("name", SEMAFLOW)
def test_a_drain_can_always_evict_one_pod_and_never_the_last(name: str) -> None:
    budget = by_kind("PodDisruptionBudget")[name]
    fewest, most = replica_range(name)
    for pods in (fewest, most):
        allowed = allowed_disruptions(budget, pods)
        assert allowed >= 1, f"{name} with {pods} pods blocks every drain"
        assert pods - allowed >= 1, f"{name} with {pods} pods may lose them all"


def test_the_scheduler_keeps_one_of_its_two_replicas() -> None:
    # One leads (a Redis lease), the other stands by: a drain takes at most the one.
    assert by_kind("Deployment")["scheduler"]["spec"]["replicas"] == 2
    assert by_kind("PodDisruptionBudget")["scheduler"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "semaflow-scheduler"}},
    }


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_budget_does_not_reach_the_other_workers(name: str) -> None:
    selector = by_kind("PodDisruptionBudget")[name]["spec"]["selector"]["matchLabels"]
    assert selected_deployments(selector) == [name]
    assert not selects(selector, pod_labels(by_kind("Deployment")["gateway-blue"]))


# --- the Ingress ----------------------------------------------------------------------------------


def test_the_ingress_sends_everything_to_the_live_gateway_service() -> None:
    (ingress,) = by_kind("Ingress").values()
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert "annotations" not in ingress["metadata"]  # nothing tied to one controller
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"].endswith(".example.com")  # a placeholder to replace
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = by_kind("Service")[backend["name"]]
    assert backend["name"] == "gateway"  # the live one, whichever track it selects
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    # and that port leads to the gateway's HTTP port, not its internal metrics port
    container = by_kind("Deployment")["gateway-blue"]["spec"]["template"]["spec"]["containers"][0]
    target = {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]]
    assert target == 8080
    assert selected_deployments(service["spec"]["selector"]) == ["gateway-blue"]


# --- the trace collector --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collector_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(by_kind("ConfigMap")["otel-collector"]["data"]["collector.yaml"])
    return config


def test_the_services_export_traces_to_the_collector_service() -> None:
    settings = by_kind("ConfigMap")["semaflow-config"]["data"]
    endpoint = urlsplit(settings["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert settings["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    service = by_kind("Service")[str(endpoint.hostname)]  # in the namespace, so the bare name resolves
    assert endpoint.port in [p["port"] for p in service["spec"]["ports"]]
    assert selected_deployments(service["spec"]["selector"]) == ["otel-collector"]
    # every semaflow pod reads that setting
    for name in SEMAFLOW:
        (container,) = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": "semaflow-config"}} in container["envFrom"], name


def test_the_collector_listens_where_its_service_sends(collector_config: dict[str, Any]) -> None:
    settings = by_kind("ConfigMap")["semaflow-config"]["data"]
    endpoint = urlsplit(settings["OTEL_EXPORTER_OTLP_ENDPOINT"])
    service = by_kind("Service")["otel-collector"]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == endpoint.port]
    (container,) = by_kind("Deployment")["otel-collector"]["spec"]["template"]["spec"]["containers"]
    container_port = {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]]
    # OTLP/HTTP, on all interfaces (the collector's default is localhost only)
    http = collector_config["receivers"]["otlp"]["protocols"]["http"]
    host, _, listen = http["endpoint"].rpartition(":")
    assert (host, int(listen)) == ("0.0.0.0", container_port)


def test_the_collector_reads_its_config_map_and_runs_a_traces_pipeline(collector_config: dict[str, Any]) -> None:
    pod = by_kind("Deployment")["otel-collector"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("otel/opentelemetry-collector:")
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "otel-collector"
    assert container["args"] == [f"--config={mount['mountPath']}/collector.yaml"]
    # each component a pipeline names is configured, and each configured one is used
    pipelines = collector_config["service"]["pipelines"]
    assert set(pipelines) == {"traces"}
    for section in ("receivers", "processors", "exporters"):
        used = {name for pipeline in pipelines.values() for name in pipeline[section]}
        assert used == set(collector_config[section]), section
    assert set(collector_config["service"]["extensions"]) == set(collector_config["extensions"])
    # the probes ask the health_check extension on its port
    health = collector_config["extensions"]["health_check"]["endpoint"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == int(health.rpartition(":")[2]), probe
    assert pipelines["traces"]["processors"][0] == "memory_limiter"  # first, as the collector advises


def test_nothing_points_at_a_collector_that_is_not_deployed() -> None:
    services = set(by_kind("Service"))
    for name, config in by_kind("ConfigMap").items():
        for key, value in config["data"].items():
            if key.startswith("OTEL_EXPORTER_OTLP") and key.endswith("ENDPOINT"):
                assert urlsplit(value).hostname in services, f"{name}: {key}={value}"
