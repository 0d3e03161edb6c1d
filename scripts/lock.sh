#!/usr/bin/env bash
# Write requirements.lock: every package semaflow and all its extras (dev, and any other) install,
# pinned, with the hashes of its files, for scripts/bootstrap.sh to install with --require-hashes.
#
# The resolution is universal (uv's): one file for Linux, macOS and Windows, any CPU, Python 3.11 and
# later, with environment markers where they differ. Tested, though, only as installed on Linux x86_64
# with Python 3.11 (where the versions for Python 3.12+ forks, e.g. numpy, are not the ones tested).
#
# PyTorch is left out, and with it what only its CUDA build needs (triton, nvidia-*, cuda-*):
# bootstrap installs torch==2.13.0 by itself, the CPU build where pip finds one. Its other
# dependencies (sympy, networkx, filelock, ...) are locked like the rest. Resolving reads the
# packages' metadata only; no wheel is downloaded.
#
# Arguments go to `uv pip compile` (`--upgrade`: the newest allowed versions, not the locked ones).
set -euo pipefail
cd "$(dirname "$0")/.."

UV=.venv/bin/uv
[ -x "$UV" ] || { echo "no $UV: run scripts/bootstrap.sh first (uv comes with the dev extra)" >&2; exit 1; }

# What pip needs to build semaflow itself (bootstrap builds it without build isolation).
build_requires=$'setuptools>=68\nwheel'
compile() {
  printf '%s\n' "$build_requires" \
    | "$UV" pip compile pyproject.toml - --all-extras --universal --python-version 3.11 \
      --custom-compile-command "make lock" "$@"
}

mapfile -t excluded < <(compile --quiet --no-header --no-annotate \
  | sed -nE 's/^(torch|triton|nvidia-[A-Za-z0-9._-]+|cuda-[A-Za-z0-9._-]+)==.*/\1/p' | sort -u)
args=()
for name in "${excluded[@]}"; do
  args+=(--no-emit-package "$name")
done
compile --quiet --generate-hashes "${args[@]}" --output-file requirements.lock "$@"
echo "requirements.lock: $(grep -cE '^[A-Za-z0-9]' requirements.lock) packages (left out: ${excluded[*]})"
