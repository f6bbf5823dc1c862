# Two commands matter: `make run` (the whole embedded stack) and `make test` (the whole suite).
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint format bench clean chaos

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/dialer run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Real processes on loopback, a fault under load, one table row per scenario (docs/RELIABILITY.md).
# CHAOS_ARGS='--only 1,6 --scale 0.5' narrows it.
chaos: install
	$(BIN)/python -m chaos.run $(CHAOS_ARGS)

# Dialer against the Temporal floor on a private dev server (bench/README.md); not part of
# `make test`. BENCH_ARGS='--full' for the long run, '--only throughput --reps 1' to narrow.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): bench/requirements.txt $(STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# mypy reads [tool.mypy] in pyproject.toml: strict, over the product, tests, bench, chaos, tools.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .mypy_cache *.egg-info
