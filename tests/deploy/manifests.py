"""The Kubernetes manifests of deploy/k8s/, read for tests: every resource, by kind, and label matching."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.cluster import ROOT

K8S = ROOT / "deploy" / "k8s"
#: What `kubectl apply -f deploy/k8s/` applies, and the templates to copy.
MANIFESTS = sorted([*K8S.glob("*.yaml"), *K8S.glob("templates/*.yaml")])
WORKERS = ("embedder", "indexer", "notifier", "scheduler")
#: The Deployments of semaflow's own services.
SEMAFLOW = ("gateway-blue", *WORKERS)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` or a Service's ``selector``) picks pods with ``labels``."""
    return bool(selector) and selector.items() <= labels.items()


def selected_deployments(selector: Mapping[str, str]) -> list[str]:
    """The Deployments whose pods the selector picks."""
    return sorted(name for name, d in by_kind("Deployment").items() if selects(selector, pod_labels(d)))
