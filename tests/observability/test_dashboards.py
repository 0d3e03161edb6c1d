"""The Grafana dashboards and their provisioning: the panels operators need, wired to the provisioned data source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.contract import ROOT
from tests.observability.usage import DASHBOARDS

PROVISIONING = ROOT / "observability" / "grafana" / "provisioning"

#: Dashboard file -> (title, the panels it must have): "semaflow service" and "semaflow workers".
EXPECTED = {
    "semaflow-service.json": (
        "semaflow service",
        {
            "Request rate by route",
            "Error rate",
            "Latency p95 by route",
            "Cache hit rate",
            "FAISS search seconds",
            "Vectors by collection",
            "Index memory by gateway",
        },
    ),
    "semaflow-workers.json": (
        "semaflow workers",
        {
            "Queue depth",
            "Task duration p95 by actor",
            "Retries",
            "Dead letters",
            "Webhook deliveries by outcome",
            "Embedding throughput",
            "Schedule firings",
        },
    ),
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return data


def datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            found[source["uid"]] = source
    return found


def test_the_dashboards_directory_holds_exactly_the_two_dashboards() -> None:
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_dashboard_has_its_title_uid_and_panels(name: str) -> None:
    dashboard = load(name)
    title, panels = EXPECTED[name]
    assert dashboard["title"] == title
    assert dashboard["uid"] == Path(name).stem
    titles = {p["title"] for p in dashboard["panels"]}
    assert panels <= titles, f"missing panels: {sorted(panels - titles)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_query_reads_the_provisioned_prometheus(name: str) -> None:
    sources = datasources()
    dashboard = load(name)
    queried = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            uid = target["datasource"]["uid"]
            assert uid in sources, f"{panel['title']}: unknown data source {uid!r}"
            assert sources[uid]["type"] == target["datasource"]["type"] == "prometheus"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_have_unique_ids_and_do_not_overlap(name: str) -> None:
    panels = load(name)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_provisioned_data_sources_point_at_the_compose_services() -> None:
    sources = datasources()
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert sources["prometheus"]["isDefault"] is True
    assert sources["jaeger"] == sources["jaeger"] | {"type": "jaeger", "url": "http://jaeger:16686"}


def test_the_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "semaflow.yml").read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
