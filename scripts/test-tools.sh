#!/usr/bin/env bash
# Install the system tools the tests use beyond the virtualenv: promtool (Debian's prometheus
# package) checks the alert rules and the Prometheus configuration; amtool (Debian's
# prometheus-alertmanager package) checks the Alertmanager configuration; chromium (Debian's package)
# is the browser the console's tests drive with Playwright. A no-op once all are there.
set -euo pipefail

# tool:package pairs
tools=(promtool:prometheus amtool:prometheus-alertmanager chromium:chromium)
missing=()
for pair in "${tools[@]}"; do
  if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the tests need promtool and amtool (Prometheus' and Alertmanager's tools) and chromium: install them with your package manager" >&2
  exit 0  # the tests that need them fail or skip and say so
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "the tests need promtool, amtool and chromium: run 'apt-get install -y --no-install-recommends ${missing[*]}' as root" >&2
    exit 0
  fi
  sudo="sudo"
fi
echo "installing ${missing[*]} (Debian packages) for the tests" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
