#!/usr/bin/env bash
# Create .venv at the repository root and install semaflow with its dev and docs tools, at the versions of
# requirements.lock (checked against its hashes; `make lock` writes it) and PyTorch 2.13.0.
# Re-runs are cheap: it reinstalls only when pyproject.toml or requirements.lock changed since the
# last install.
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
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install --quiet)
  "${pip[@]}" --upgrade pip
  # Everything but PyTorch, exactly as locked; --no-deps: the lock lists every dependency itself.
  "${pip[@]}" --require-hashes --no-deps -r requirements.lock
  # PyTorch, pinned: the CPU build is what semaflow is tested with. The lock leaves it out because
  # where the CPU build lies is a matter of the machine (a local wheel, or PyTorch's CPU index set
  # in pip's configuration); unpinned, a dependency would pull the newest multi-GB CUDA build.
  # Its dependencies are in place already (from the lock), so this installs torch alone.
  "${pip[@]}" "torch==2.13.0"
  # semaflow itself, built with the setuptools of the lock.
  "${pip[@]}" --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check
  echo "$want" > "$stamp"
fi
