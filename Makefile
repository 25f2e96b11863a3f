# One task runner for people and CI: install, run, test, lint, bench.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCAL := .local
SERVICES_ENV := $(LOCAL)/services.env
STAMP := $(VENV)/.installed
# Load the URLs of the PostgreSQL and Redis in use (the configured ones, or project-local ones).
WITH_SERVICES := set -a && . ./$(SERVICES_ENV) && set +a &&

.PHONY: help install services migrate run worker beat test test-fast lint format bench bench-smoke stop-services clean example dashboard

help:
	@echo "make run    - install if needed, make sure PostgreSQL and Redis are up, migrate, start worker + beat"
	@echo "make test   - lint, then the whole test suite (unit, eager, live worker, faults, API example)"
	@echo "make lint   - ruff and mypy (strict on worker/ and tasks/)"
	@echo "make dashboard - the operators' dashboard on http://127.0.0.1:9541 (DASHBOARD_ARGS=--read-only)"
	@echo "make example - the example FastAPI service (examples/api) on :8000, with a worker + beat"
	@echo "make bench  - benchmarks: prints a table, writes benchmarks/results/"
	@echo "make stop-services - stop the project-local PostgreSQL/Redis that make started, if any"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,api,bench,dashboard]'
	@touch $(STAMP)

install: $(STAMP)

services: install
	@mkdir -p $(LOCAL)
	@$(BIN)/python -m worker.development.services ensure --dir $(LOCAL) --env-file $(SERVICES_ENV) > /dev/null

migrate: services
	@$(WITH_SERVICES) $(BIN)/alembic upgrade head

run: migrate
	@echo "starting worker (prefork, WORKER_CONCURRENCY children, default 3 per CPU) with embedded beat; Ctrl-C stops it"
	@$(WITH_SERVICES) exec $(BIN)/celery -A worker.app worker --beat -P prefork -l INFO \
		--schedule $(LOCAL)/celerybeat-schedule

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint services
	@# Three xdist workers: each line of fault tests runs serially on one, the rest beside them.
	@$(WITH_SERVICES) $(BIN)/python -m pytest -n $(or $(PYTEST_JOBS),3) --dist loadgroup $(PYTEST_ARGS)
	@# The example API's own suite, run from its folder the way an API team runs theirs.
	@$(WITH_SERVICES) cd examples/api && ../../$(BIN)/python -m pytest $(EXAMPLE_PYTEST_ARGS)

test-fast: services
	@$(WITH_SERVICES) $(BIN)/python -m pytest -m "not faults and not integration" $(PYTEST_ARGS)

bench: services
	@$(WITH_SERVICES) $(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-smoke: services
	@$(WITH_SERVICES) $(BIN)/python -m benchmarks --smoke $(BENCH_ARGS)

dashboard: migrate
	@$(WITH_SERVICES) exec $(BIN)/python -m worker dashboard $(DASHBOARD_ARGS)

example: migrate
	@$(WITH_SERVICES) exec $(BIN)/python examples/api/run.py --port $(or $(EXAMPLE_PORT),8000) \
		--schedule $(LOCAL)/celerybeat-schedule-example

stop-services: install
	@$(BIN)/python -m worker.development.services stop --dir $(LOCAL) --env-file $(SERVICES_ENV)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
