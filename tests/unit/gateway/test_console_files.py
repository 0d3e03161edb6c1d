"""The console's files: each one is package data (an installed wheel serves it), has a name the gateway serves,
and needs nothing the console's policy refuses (inline script or style, HTML injected from data)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from services.gateway.api.console import _FILE, CONSOLE_DIR

ROOT = Path(__file__).resolve().parents[3]


def _files() -> list[Path]:
    found = sorted(p for p in CONSOLE_DIR.iterdir() if p.is_file())
    assert found, CONSOLE_DIR
    return found


def test_every_console_file_is_package_data_with_a_name_the_gateway_serves() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    gateway = globs["services.gateway"]
    for path in _files():
        relative = path.relative_to(CONSOLE_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in gateway), relative
        assert path.name == "index.html" or _FILE.match(path.name), path.name


def test_the_page_has_no_inline_script_or_style_and_scripts_never_inject_html() -> None:
    html = (CONSOLE_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html and re.search(r"\son[a-z]+=", html) is None
    for script in CONSOLE_DIR.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, (script.name, sink)
        assert "localStorage" not in text and "document.cookie" not in text, script.name
