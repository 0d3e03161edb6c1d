"""The documentation site builds with ``mkdocs build --strict`` and its generated reference is complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.gateway.main import ROUTE_TABLES
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).parent / "mkdocs"
# What scripts/gen_docs.py writes; a stale copy in the checkout must not stand in for it.
GENERATED = ("openapi.json", "reference/api.md", "reference/api-schemas.md", "reference/configuration.md")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the docs with freshly generated reference pages, built into ``site/``."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", root / "docs")
    for name in GENERATED:
        (root / "docs" / name).unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--out", str(root / "docs")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    build = subprocess.run(
        [str(MKDOCS), "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(root / "site")],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    return root


def test_site_builds_with_every_page(built: Path) -> None:
    site = built / "site"
    pages = sorted(p.relative_to(built / "docs").with_suffix(".html") for p in (built / "docs").rglob("*.md"))
    assert Path("reference/configuration.html") in pages
    assert [p for p in pages if not (site / p).is_file()] == []
    assert (site / "openapi.json").is_file()


def test_configuration_page_lists_every_setting(built: Path) -> None:
    page = (built / "docs" / "reference" / "configuration.md").read_text()
    html = (built / "site" / "reference" / "configuration.html").read_text()
    prefix = Settings.model_config.get("env_prefix", "")
    names = {
        field.validation_alias if isinstance(field.validation_alias, str) else f"{prefix}{name}".upper()
        for name, field in Settings.model_fields.items()
    }
    assert len(names) == len(Settings.model_fields)
    assert [n for n in sorted(names) if f"| `{n}` |" not in page] == []
    assert [n for n in sorted(names) if f"<code>{n}</code>" not in html] == []
    described = {
        n: " ".join(f.description.split()).replace("|", "\\|")
        for n, f in Settings.model_fields.items()
        if f.description
    }
    assert [n for n, text in described.items() if text not in page] == []


def test_api_page_lists_every_path_of_the_openapi_document(built: Path) -> None:
    spec = json.loads((built / "docs" / "openapi.json").read_text())
    declared = {ep.path for table in ROUTE_TABLES for ep in table if ep.in_schema}
    assert set(spec["paths"]) == declared
    page = (built / "docs" / "reference" / "api.md").read_text()
    operations = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    assert [op for op in operations if f"### `{op[0]} {op[1]}`" not in page] == []
    schemas = (built / "docs" / "reference" / "api-schemas.md").read_text()
    assert [s for s in spec["components"]["schemas"] if f"## `{s}`" not in schemas] == []
