# SignBridge developer commands. `make run` starts the whole stack; `make test` lints and tests.
# The venv is (re)installed only when pyproject.toml is newer than .venv/.installed, so repeated
# `make test` runs go straight to the checks.

SHELL := bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := signbridge workflows activities api connectors store worker.py

.PHONY: install venv run test lint bench clean

install: $(STAMP)
venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# `make run PORT=8100`: the API on 8100, and every other port of the stack moved by the same offset.
run: install
	$(BIN)/signbridge run $(if $(PORT),--api-port $(PORT))

# Lint runs every tool even when one fails, so one pass shows every problem. `lint-imports`
# checks the layer contracts in pyproject.toml (docs/architecture.md).
lint: install
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/mypy $(PACKAGES) || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

# pytest's exit code 5 ("no tests collected") is a failure like any other non-zero code.
# Test files run on TEST_WORKERS processes (pytest-xdist; one file stays on one process, so its
# module fixtures are built once): much of the suite waits on Temporal, servers and timers.
TEST_WORKERS ?= 2
test: install
	@$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

# Benchmarks against the embedded defaults; writes docs/benchmarks.md (see bench/).
bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf .data
