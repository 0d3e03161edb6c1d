#!/usr/bin/env bash
# Install the system tools the tests use beyond the virtualenv: promtool (Debian's prometheus
# package) checks the alert rules and the Prometheus configuration. A no-op once it is there.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the tests need promtool (Prometheus' tool): install Prometheus with your package manager" >&2
  exit 0  # the tests that need it fail and say so
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "the tests need promtool: run 'apt-get install -y --no-install-recommends prometheus' as root" >&2
    exit 0
  fi
  sudo="sudo"
fi
echo "installing promtool (Debian package prometheus) for the tests" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
