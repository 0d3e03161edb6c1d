"""observability/alertmanager.yml: Alertmanager's own checker (amtool), where every alert goes, and its wiring.

amtool comes from Debian's ``prometheus-alertmanager`` package (``make test-tools`` installs it);
the tests that run it are skipped, saying so, where it is missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.contract import ROOT, TARGET_LABELS
from tests.observability.promql import parse
from tests.tools import AMTOOL, optional

OBSERVABILITY = ROOT / "observability"
CONFIG = OBSERVABILITY / "alertmanager.yml"


@pytest.fixture(scope="module")
def amtool() -> str:
    return optional("amtool", AMTOOL)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def alert_labels() -> list[dict[str, str]]:
    """Each rule of alerts.yml as the labels its alerts carry (its own, alertname, and a job and queue)."""
    groups = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]
    return [
        {"alertname": rule["alert"], **rule["labels"], "job": "semaflow-embedder", "queue": "embed"}
        for group in groups
        for rule in group["rules"]
    ]


def route_of(amtool: str, labels: dict[str, str], config: Path = CONFIG) -> list[str]:
    result = run(
        amtool, "config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def test_the_configuration_is_valid(amtool: str) -> None:
    result = run(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_rejects_a_route_to_an_undefined_receiver(amtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(CONFIG.read_text().replace("receiver: semaflow-webhook", "receiver: nobody", 1))
    result = run(amtool, "check-config", str(broken))
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


def test_every_alert_rule_reaches_the_webhook(amtool: str) -> None:
    labels = alert_labels()
    assert {entry["severity"] for entry in labels} == {"critical", "warning"}
    for entry in labels:
        assert route_of(amtool, entry) == ["semaflow-webhook"], entry


def test_the_routing_test_would_notice_an_alert_going_elsewhere(amtool: str, tmp_path: Path) -> None:
    # Given critical alerts routed to a receiver of their own
    config = yaml.safe_load(CONFIG.read_text())
    config["receivers"].append({"name": "pager"})
    config["route"]["routes"][0]["receiver"] = "pager"
    changed = tmp_path / "alertmanager.yml"
    changed.write_text(yaml.safe_dump(config))
    # Then the routing of a critical alert says so
    assert route_of(amtool, {"alertname": "SemaflowRedisDown", "severity": "critical"}, changed) == ["pager"]


def test_the_webhook_is_a_placeholder_that_resolves_nowhere_and_resolutions_are_sent() -> None:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    (webhook,) = receivers["semaflow-webhook"]["webhook_configs"]
    assert ".invalid" in webhook["url"]  # RFC 2606: replaced before use, never delivered by accident
    assert webhook["send_resolved"] is True
    # every receiver is routed to: none is left over from an old route
    routed = {config["route"]["receiver"], *(r["receiver"] for r in config["route"].get("routes", []))}
    assert routed == set(receivers)


def test_alerts_are_grouped_only_by_labels_some_alert_carries() -> None:
    # An alert carries its rule's labels, alertname, and what its expression keeps: the labels of
    # its aggregations' by (...) clauses, or the scrape target's labels where it does not aggregate.
    carried = {"alertname", *TARGET_LABELS}
    for group in yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            carried |= rule["labels"].keys() | parse(rule["expr"]).grouping_labels
    group_by = yaml.safe_load(CONFIG.read_text())["route"]["group_by"]
    assert set(group_by) <= carried, set(group_by) - carried
    assert {"service", "queue"} <= set(group_by)  # one notification per stalled service or queue


def test_prometheus_sends_its_alerts_to_the_stacks_alertmanager() -> None:
    prometheus = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    (manager,) = prometheus["alerting"]["alertmanagers"]
    (static,) = manager["static_configs"]
    assert static["targets"] == ["alertmanager:9093"]  # compose's service (tests/deploy/test_compose.py)
