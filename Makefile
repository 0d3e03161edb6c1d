# The verbs people expect; the README and CI call these.
.PHONY: install run test test-unit test-integration test-e2e lint format typecheck check bench

PY := .venv/bin/python

install:
	@bash scripts/bootstrap.sh

run: install
	.venv/bin/semaflow up $(ARGS)

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-e2e: install
	$(PY) -m pytest tests/e2e

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

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/search.py
	$(PY) bench/startup.py
	$(PY) bench/priority.py
