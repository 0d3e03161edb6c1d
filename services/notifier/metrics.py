"""The notifier's own Prometheus metrics (beside the task metrics every worker has)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class NotifierMetrics:
    """Webhook attempts by outcome and their latency, and mail by kind and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "semaflow_webhook_deliveries",
            "Webhook attempts by what they led to: succeeded, retry, failed (given up), exhausted.",
            ["outcome"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "semaflow_webhook_attempt_seconds",
            "Time from sending a webhook request to its answer (or the error).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
            registry=registry,
        )
        self.emails = Counter(
            "semaflow_emails",
            "Notification mail by kind and outcome: sent, skipped (no address or over quota), failed.",
            ["kind", "outcome"],
            registry=registry,
        )
        for outcome in ("succeeded", "retry", "failed", "exhausted"):
            self.deliveries.labels(outcome=outcome)
