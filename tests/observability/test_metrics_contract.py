"""Alerts and dashboards use only the metrics of the contract (``observability/metrics.yml``), as it describes them."""

from __future__ import annotations

import pytest

from tests.observability.contract import Contract
from tests.observability.promql import parse
from tests.observability.usage import (
    alert_expressions,
    dashboard_expressions,
    expressions,
    used_metrics,
    used_series,
)

#: What the alerts and dashboards must at least show (the product's observability requirements).
REQUIRED_FAMILIES = {
    "semaflow_http_requests",
    "semaflow_http_request_duration_seconds",
    "semaflow_faiss_search_seconds",
    "semaflow_index_vectors",
    "semaflow_index_memory_bytes",
    "semaflow_search_cache_requests",
    "semaflow_embed_batches",
    "semaflow_embed_documents",
    "semaflow_embed_batch_seconds",
    "semaflow_task_duration_seconds",
    "semaflow_task_retries",
    "semaflow_queue_depth",
    "semaflow_dead_letters",
    "semaflow_webhook_deliveries",
    "semaflow_schedule_firings",
    "semaflow_redis_up",
    "semaflow_workers",
    "up",
}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def test_the_contract_names_each_process_that_exports_a_metric(contract: Contract) -> None:
    workers = {"embedder", "indexer", "notifier", "scheduler"}
    exporters = {e for m in contract.metrics.values() for e in m.exporters}
    assert {"gateway", *workers} <= exporters
    # Cluster-wide gauges come from the gateway only, which reads them from Redis at scrape time.
    for name in ("semaflow_queue_depth", "semaflow_dead_letters", "semaflow_workers", "semaflow_redis_up"):
        assert contract.metrics[name].exporters == {"gateway"}


def test_there_are_expressions_to_check() -> None:
    assert len(alert_expressions()) >= 7
    assert len(dashboard_expressions()) >= 30


def test_every_series_alerts_and_dashboards_use_is_in_the_contract(contract: Contract) -> None:
    unknown = {
        f"{e.where}: {name}"
        for e in expressions()
        for name in parse(e.expr).metric_names
        if contract.family(name) is None
    }
    assert not unknown, "not in observability/metrics.yml:\n" + "\n".join(sorted(unknown))


def test_label_matchers_name_labels_the_metric_has_and_values_it_can_take(contract: Contract) -> None:
    problems: list[str] = []
    for e in expressions():
        for selector in parse(e.expr).selectors:
            metric = contract.family(selector.metric)
            assert metric is not None, selector.metric
            for m in selector.matchers:
                if not metric.allows_label(m.label, selector.metric):
                    problems.append(f"{e.where}: {selector.metric} has no label {m.label!r}")
                elif not metric.admits(m.label, m.op, m.value):
                    where = f"{e.where}: {selector.metric}{{{m.label}{m.op}{m.value!r}}}"
                    problems.append(f"{where} matches none of its values")
    assert not problems, "\n".join(problems)


def test_grouping_labels_are_labels_of_the_metrics_grouped(contract: Contract) -> None:
    problems: list[str] = []
    for e in expressions():
        usage = parse(e.expr)
        families = [(s.metric, contract.family(s.metric)) for s in usage.selectors]
        known = {"job", "instance"} | {label for _, m in families if m is not None for label in m.labels}
        if any(series.endswith("_bucket") for series, _ in families):
            known.add("le")
        if usage.grouping_labels - known:
            problems.append(f"{e.where}: groups by {sorted(usage.grouping_labels - known)}")
    assert not problems, "\n".join(problems)


def test_alerts_and_dashboards_cover_what_operators_need(contract: Contract) -> None:
    assert used_metrics(contract) >= REQUIRED_FAMILIES


def test_every_metric_of_the_contract_is_on_a_dashboard_or_in_an_alert(contract: Contract) -> None:
    assert set(contract.metrics) - used_metrics(contract) == set()


def test_used_series_are_sample_names_as_exposed(contract: Contract) -> None:
    series = used_series()
    assert "semaflow_http_requests_total" in series
    assert "semaflow_http_request_duration_seconds_bucket" in series
    assert "semaflow_http_requests" not in series  # a counter is never selected by its family name
    assert series <= contract.all_series()
