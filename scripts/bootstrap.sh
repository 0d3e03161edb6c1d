#!/usr/bin/env bash
# Create .venv at the repository root and install semaflow with its dev and docs tools.
# Re-runs are cheap: it reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "semaflow needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || { echo "could not create .venv (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
fi

stamp=.venv/.semaflow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # PyTorch first and pinned: the CPU build is what semaflow is tested with. (Unpinned, a dependency
  # would pull the newest multi-GB CUDA build.)
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev,docs]"
  echo "$want" > "$stamp"
fi
