# The commands the README shows. `make demo` and `make test` do all the set-up on a machine
# with only Python and pip: install uv if missing, create .venv from uv.lock, run.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif

# Telemetry off for everything the Makefile starts (the code sets the same defaults itself).
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export NML_DISABLE_USAGE_LOGGING := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
# XGBoost/OpenMP on shared cores: don't spin while waiting (20x slower under load otherwise).
export OMP_WAIT_POLICY := passive

.PHONY: setup demo test lint format bench clean stack stack-down

# `make demo STACK=1` runs the demo on the production stack (brought up first if needed);
# `STACK=DIR` names another stack folder.
STACK ?=
STACK_DIR := $(if $(filter 1 yes true,$(STACK)),.evergreen/stack,$(STACK))

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen
	@touch $@

demo: setup
ifneq ($(STACK_DIR),)
	$(UV) run --frozen evergreen stack up --dir $(STACK_DIR)
	$(UV) run --frozen evergreen demo --stack $(STACK_DIR)
else
	$(UV) run --frozen evergreen demo
endif

# The production stack on 127.0.0.1 (PostgreSQL, Prefect server + work pool + 2 workers,
# MLflow server, S3 endpoint): see README "Production".
stack: setup
	$(UV) run --frozen evergreen stack up

stack-down: setup
	$(UV) run --frozen evergreen stack down

# The tests that run in pytest's process (unit, serving, and flows on its own Prefect test
# harness) run on TEST_WORKERS processes (pytest-xdist, one module per process at a time):
# on 2 cores unit + serving take 3.7 min instead of 6.4, flows 5.2 instead of 7.4. The tests
# with servers, workers and fault timings (reliability, e2e, ui, stack) run one at a time,
# in pyproject's order.
TEST_WORKERS ?= 2
test: setup
	$(UV) run --frozen ruff check evergreen flows tasks blocks tests bench
	$(UV) run --frozen pytest -n $(TEST_WORKERS) --dist loadfile tests/unit tests/serving tests/flows
	$(UV) run --frozen pytest tests/reliability tests/e2e tests/ui tests/stack

lint: setup
	$(UV) run --frozen ruff check evergreen flows tasks blocks tests bench
	$(UV) run --frozen ruff format --check evergreen flows tasks blocks tests bench
	$(UV) run --frozen mypy

format: setup
	$(UV) run --frozen ruff format evergreen flows tasks blocks tests bench
	$(UV) run --frozen ruff check --fix evergreen flows tasks blocks tests bench

bench: setup
	$(UV) run --frozen evergreen bench

clean:
	rm -rf .evergreen
