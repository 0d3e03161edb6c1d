"""The PromQL reader behind the metrics-contract checks: names, not functions, keywords, labels or strings."""

from __future__ import annotations

import pytest

from tests.observability.promql import Matcher, PromQLSyntaxError, Selector, metric_names, parse


def test_a_bare_metric_is_its_own_name() -> None:
    assert metric_names("semaflow_redis_up") == {"semaflow_redis_up"}


def test_functions_and_aggregations_are_not_metrics() -> None:
    expr = "histogram_quantile(0.95, sum by (le) (rate(semaflow_http_request_duration_seconds_bucket[5m])))"
    assert metric_names(expr) == {"semaflow_http_request_duration_seconds_bucket"}


def test_grouping_labels_are_not_metrics_and_are_reported() -> None:
    usage = parse("sum(rate(x_total[5m])) by (route, status) / on (route) group_left (tenant) max without (job) (y)")
    assert usage.metric_names == {"x_total", "y"}
    assert usage.grouping_labels == {"route", "status", "tenant", "job"}


def test_group_left_without_a_label_list_is_followed_by_a_metric() -> None:
    assert metric_names("a * on (job) group_left b") == {"a", "b"}


def test_keywords_are_not_metrics() -> None:
    expr = "a > bool 1 and b unless c or d offset 5m or e > Inf or f < NaN"
    assert metric_names(expr) == {"a", "b", "c", "d", "e", "f"}


def test_label_matchers_are_read_with_their_operators_and_unquoted_values() -> None:
    usage = parse(r"""semaflow_http_requests_total{status=~"5..", route!="/healthz", method='POST', q="a\"b"}""")
    assert usage.selectors == (
        Selector(
            "semaflow_http_requests_total",
            (
                Matcher("status", "=~", "5.."),
                Matcher("route", "!=", "/healthz"),
                Matcher("method", "=", "POST"),
                Matcher("q", "=", 'a"b'),
            ),
        ),
    )


def test_label_names_that_are_keywords_stay_label_names() -> None:
    usage = parse('x{on="1", by="2"}')
    assert usage.metric_names == {"x"}
    assert [m.label for m in usage.selectors[0].matchers] == ["on", "by"]


def test_strings_outside_selectors_are_arguments() -> None:
    expr = 'label_replace(up{job="semaflow-gateway"}, "service", "$1", "job", "semaflow-(.*)")'
    assert metric_names(expr) == {"up"}


def test_durations_subqueries_and_template_variables_are_skipped() -> None:
    expr = "max_over_time(deriv(a[10m])[1h:5m]) + rate(b_total[$__rate_interval]) + rate(c_total[${interval}])"
    assert metric_names(expr) == {"a", "b_total", "c_total"}


def test_recording_rule_names_with_colons_are_metrics() -> None:
    assert metric_names("job:semaflow_http_requests:rate5m > 1") == {"job:semaflow_http_requests:rate5m"}


def test_a_selector_by_name_label() -> None:
    usage = parse('{__name__="semaflow_queue_depth", queue="embed"}')
    assert usage.selectors == (Selector("semaflow_queue_depth", (Matcher("queue", "=", "embed"),)),)


def test_comments_are_skipped() -> None:
    assert metric_names("a # b\n + c") == {"a", "c"}


@pytest.mark.parametrize("expr", ["x{job=}", "x{job", "sum by (le", "x ; y", '{job="a"}'])
def test_what_it_cannot_read_is_an_error(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        parse(expr)
