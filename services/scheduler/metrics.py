"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class SchedulerMetrics:
    """Firings by schedule, and whether this replica leads."""

    def __init__(self, registry: CollectorRegistry, schedules: list[str]) -> None:
        self.firings = Counter(
            "semaflow_schedule_firings",
            "Schedule runs this replica fired (ticks, catch-ups and manual triggers), by schedule.",
            ["schedule"],
            registry=registry,
        )
        for name in schedules:
            self.firings.labels(schedule=name)
        self.leader = Gauge(
            "semaflow_scheduler_leader", "1 while this replica holds the scheduler lease, else 0.", registry=registry
        )

    def follow_leadership(self, leading: Callable[[], bool]) -> None:
        """Read leadership when scraped."""
        self.leader.set_function(lambda: 1.0 if leading() else 0.0)
