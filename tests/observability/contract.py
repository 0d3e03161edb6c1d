"""The metrics contract (``observability/metrics.yml``): every metric family semaflow exports, read for tests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "observability" / "metrics.yml"

Kind = Literal["counter", "gauge", "histogram"]
#: The samples prometheus-client exposes for a family, by type (`_created` samples left aside).
SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
#: Labels every series may carry: Prometheus adds `job` and `instance` to what it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
#: The processes of the stack; `prometheus` stands for series Prometheus makes itself (`up`).
PROCESSES = frozenset({"gateway", "embedder", "indexer", "notifier", "scheduler", "prometheus"})


@dataclass(frozen=True)
class Metric:
    """One metric family of the contract."""

    name: str
    kind: Kind
    help: str
    labels: frozenset[str]
    values: Mapping[str, frozenset[str]]
    exporters: frozenset[str]

    @property
    def series(self) -> frozenset[str]:
        """The sample names the family is exposed as (a counter's ``_total``, a histogram's three)."""
        return frozenset(self.name + suffix for suffix in SUFFIXES[self.kind])

    def allows_label(self, label: str, series: str) -> bool:
        """Whether a selector of ``series`` may match on ``label`` (``le`` only on a histogram's buckets)."""
        return label in self.labels or label in TARGET_LABELS or (label == "le" and series.endswith("_bucket"))

    def admits(self, label: str, op: str, value: str) -> bool:
        """Whether a matcher can select anything, given the label's fixed values (if it has them)."""
        known = self.values.get(label)
        if known is None or op in ("!=", "!~"):
            return True
        if op == "=":
            return value in known
        pattern = re.compile(value)
        return any(pattern.fullmatch(v) for v in known)


@dataclass(frozen=True)
class Contract:
    """Every family of ``metrics.yml``, by name, and the lookup from a sample name to its family."""

    metrics: Mapping[str, Metric]

    @classmethod
    def load(cls, path: Path = CONTRACT) -> Contract:
        """Read and check the contract file.

        Raises:
            ValueError: an entry lacks a field, has an unknown type or process, or repeats a name.
        """
        document = yaml.safe_load(path.read_text())
        metrics: dict[str, Metric] = {}
        for entry in [*document.get("prometheus", []), *document["metrics"]]:
            metric = _metric(cast(dict[str, Any], entry))
            if metric.name in metrics:
                raise ValueError(f"{path.name}: {metric.name} is listed twice")
            metrics[metric.name] = metric
        contract = cls(metrics)
        clashes = [s for s in contract.all_series() if len([m for m in metrics.values() if s in m.series]) > 1]
        if clashes:
            raise ValueError(f"{path.name}: sample names claimed by two families: {sorted(clashes)}")
        return contract

    def all_series(self) -> frozenset[str]:
        """Every sample name the contract promises."""
        return frozenset(s for m in self.metrics.values() for s in m.series)

    def family(self, series: str) -> Metric | None:
        """The family that exposes the sample name ``series`` (``x_bucket`` -> histogram ``x``), if any."""
        for metric in self.metrics.values():
            if series in metric.series:
                return metric
        return None


def _metric(entry: dict[str, Any]) -> Metric:
    missing = {"name", "type", "help", "labels", "exporters"} - entry.keys()
    if missing:
        raise ValueError(f"metric {entry.get('name')!r} lacks {sorted(missing)}")
    name = str(entry["name"])
    kind = entry["type"]
    if kind not in SUFFIXES:
        raise ValueError(f"{name}: unknown type {kind!r}")
    if kind == "counter" and name.endswith("_total"):
        raise ValueError(f"{name}: list a counter by its family name, without _total")
    exporters = frozenset(str(e) for e in entry["exporters"])
    if not exporters or not exporters <= PROCESSES:
        raise ValueError(f"{name}: exporters {sorted(exporters)} are not among {sorted(PROCESSES)}")
    labels = frozenset(str(label) for label in entry["labels"])
    values = {str(k): frozenset(str(v) for v in vs) for k, vs in (entry.get("values") or {}).items()}
    stray = values.keys() - labels - TARGET_LABELS
    if stray:
        raise ValueError(f"{name}: values given for labels it does not have: {sorted(stray)}")
    return Metric(name, cast(Kind, kind), str(entry["help"]), labels, values, exporters)
