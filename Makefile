# The verbs people expect; the README and CI call these.
.PHONY: install lock lock-upgrade test-tools run test test-unit test-integration test-e2e test-deploy lint format typecheck check bench docs

PY := .venv/bin/python
# `make test` runs the tests in parallel processes (pytest-xdist), one per core and at most four:
# end-to-end tests spend much of their time waiting on their services. Each file runs in one process
# (the tests of a module share its stack), in the order collected: the long end-to-end files first.
# `make test PYTEST_PARALLEL=` runs every test in one process.
PYTEST_PARALLEL ?= --numprocesses auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

install:
	@bash scripts/bootstrap.sh

# requirements.lock: every dependency (all extras) pinned with its hashes, which `make install`
# installs exactly. `lock` re-resolves after pyproject.toml changed, keeping the locked versions that
# still fit; `lock-upgrade` takes the newest allowed version of everything. One universal file for
# Linux, macOS and Windows, Python 3.11+, tested on Linux x86_64 with Python 3.11; PyTorch and its
# CUDA-only packages are left out (see scripts/lock.sh).
lock:
	@bash scripts/lock.sh

lock-upgrade:
	@bash scripts/lock.sh --upgrade

# System tools some tests use (promtool, amtool, chromium); installed with apt when missing.
test-tools:
	@bash scripts/test-tools.sh

run: install
	.venv/bin/semaflow up $(ARGS)

test: install test-tools
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-e2e: install test-tools
	$(PY) -m pytest $(PYTEST_PARALLEL) tests/e2e

# The deployment and observability files, checked offline (promtool, Docker Compose, hadolint,
# kubernetes-validate, shellcheck); no Docker engine or cluster needed.
test-deploy: install test-tools
	$(PY) -m pytest tests/deploy tests/observability

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck: install
	.venv/bin/mypy
	.venv/bin/lint-imports

check: lint typecheck test

# The documentation site: the reference pages generated from the code, then every page built into
# site/ (offline; --strict fails on any warning, such as a broken link).
docs: install
	$(PY) scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/search.py
	$(PY) bench/ingest_loop.py
	$(PY) bench/startup.py
	$(PY) bench/priority.py
	$(PY) bench/compaction.py
	$(PY) bench/webhooks.py
	$(PY) bench/idle.py
