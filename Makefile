PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q -e . --group dev
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install Keyrack with its dev tools

run: $(STAMP) ## Migrate ./keyrack.db and serve on http://127.0.0.1:8000
	$(BIN)/keyrack migrate
	$(BIN)/keyrack serve --host 127.0.0.1 --port 8000

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest -n $(or $(JOBS),auto) $(PYTEST_ARGS)

check: $(STAMP) ## Lint and type-check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP) ## Run the benchmarks (ratios against an in-run baseline)
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/export.py

bench-peers-venv: ## Create .venv-peers: the peers bench/gateway.py runs beside Keyrack
	PYTHON=$(PYTHON) bench/peers/setup.sh

.PHONY: help install run test check bench bench-peers-venv
