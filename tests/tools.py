"""External command-line tools the tests run, found or failed for with a message that says how to install them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

#: The repository's root.
ROOT = Path(__file__).resolve().parents[1]
#: Where pip puts the console scripts and binaries of the dev dependencies (the running venv).
VENV_BIN = Path(sys.executable).parent


def require(name: str, install: str) -> str:
    """The path of tool ``name`` (the venv's first, then PATH); fails the test, naming how to install it, if missing."""
    candidate = VENV_BIN / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; {install}", pytrace=False)
    return found


PROMTOOL = (
    "run `make test-tools` (it installs Debian's prometheus package: "
    "apt-get install -y --no-install-recommends prometheus)"
)
PIP_DEV = "it is a dev dependency: run `bash scripts/bootstrap.sh` (or `pip install -e '.[dev]'`)"
AMTOOL = (
    "run `make test-tools` (it installs Debian's prometheus-alertmanager package: "
    "apt-get install -y --no-install-recommends prometheus-alertmanager)"
)


def optional(name: str, install: str) -> str:
    """The path of tool ``name`` like :func:`require`, but skips the test, naming how to install it, if missing."""
    candidate = VENV_BIN / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed; {install}")
    return found
