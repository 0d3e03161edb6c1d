"""The PromQL that alerts and dashboards run, and the metric names it uses.

``used_series()`` gives the sample names as written in the expressions (``..._total``,
``..._bucket``): what a scrape of the running stack must show. ``used_metrics()`` gives the
contract's family names (``observability/metrics.yml``) those samples belong to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.observability.contract import ROOT, Contract
from tests.observability.promql import parse

ALERTS = ROOT / "observability" / "alerts.yml"
DASHBOARDS = ROOT / "observability" / "grafana" / "dashboards"


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (for messages)."""

    where: str
    expr: str


def alert_expressions(path: Path = ALERTS) -> list[Expression]:
    """The ``expr`` of every alerting and recording rule in a rules file."""
    document = yaml.safe_load(path.read_text())
    return [
        Expression(f"{path.name}: {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in document["groups"]
        for rule in group["rules"]
    ]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_expressions(directory: Path = DASHBOARDS) -> list[Expression]:
    """The ``expr`` of every Prometheus query of every panel of the dashboards in ``directory``."""
    found: list[Expression] = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{path.name}: {panel['title']!r} {target.get('refId', '')}".rstrip()
                    found.append(Expression(where, str(target["expr"])))
    return found


def expressions() -> list[Expression]:
    """Every expression of the alerts and the dashboards."""
    return [*alert_expressions(), *dashboard_expressions()]


def used_series() -> set[str]:
    """The sample names the alerts and dashboards select, as written (``semaflow_http_requests_total``)."""
    return {name for e in expressions() for name in parse(e.expr).metric_names}


def used_metrics(contract: Contract | None = None) -> set[str]:
    """The contract's family names behind ``used_series()`` (``semaflow_http_requests``).

    Raises:
        KeyError: a sample name belongs to no family of the contract.
    """
    contract = contract or Contract.load()
    families: set[str] = set()
    for series in used_series():
        metric = contract.family(series)
        if metric is None:
            raise KeyError(f"{series} belongs to no family of observability/metrics.yml")
        families.add(metric.name)
    return families
