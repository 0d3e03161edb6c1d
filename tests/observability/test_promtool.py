"""Prometheus' own checker on our configuration: scrape config, rules, their unit tests, the dashboards' queries.

promtool comes from Debian's ``prometheus`` package (2.42, the version the rules are written for);
without it these tests fail, naming the package.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.contract import ROOT
from tests.observability.usage import dashboard_expressions
from tests.tools import PROMTOOL, require

OBSERVABILITY = ROOT / "observability"
JOBS = {"semaflow-gateway", "semaflow-embedder", "semaflow-indexer", "semaflow-notifier", "semaflow-scheduler"}
ALERTS = {
    "SemaflowHighErrorRate",
    "SemaflowHighLatency",
    "SemaflowLowCacheHitRate",
    "SemaflowWorkerDown",
    "SemaflowQueueBacklogGrowing",
    "SemaflowDeadLettersGrowing",
    "SemaflowRedisDown",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool", PROMTOOL)


def run(*args: str, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_scrape_config_is_valid_and_loads_the_alert_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_every_service_is_scraped_under_its_contract_job_name_with_replicas_found_by_dns() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= JOBS
    for name in JOBS:
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["type"] == "A"
        assert sd["names"] == [name.removeprefix("semaflow-")]
        # every process on its internal metrics port: the gateway's public /metrics names no tenant
        assert sd["port"] == 9100
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]


def test_the_alert_rules_are_valid_and_lint_clean(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == ALERTS
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]


def test_each_alert_is_shown_firing_and_not_firing_by_its_unit_tests() -> None:
    tests = yaml.safe_load((OBSERVABILITY / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert} is never shown firing"
        assert any(not case["exp_alerts"] for case in mine), f"{alert} is never shown quiet"


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_would_catch_a_wrong_threshold(promtool: str, tmp_path: Path) -> None:
    # Given the rules with the error-rate threshold raised from 5 % to 50 %
    rules = (OBSERVABILITY / "alerts.yml").read_text()
    assert "> 0.05\n" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("> 0.05\n", "> 0.5\n", 1))
    (tmp_path / "alerts_test.yml").write_text((OBSERVABILITY / "alerts_test.yml").read_text())
    # When the unit tests run against them, then they fail on that alert
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SemaflowHighErrorRate" in result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Prometheus parses each query as a recording rule; Grafana's interval variables become a duration.
    queries = dashboard_expressions()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": re.sub(r"\$__(rate_)?interval", "1m", q.expr)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
