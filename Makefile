# Two commands matter: `make run` (the whole embedded stack) and `make test` (the whole suite).
# Both create .venv and install into it exactly what uv.lock pins: `make run` the runtime
# dependencies, `make test` (and lint) the test extras too. `make lock` after any change to
# the dependencies of pyproject.toml; a lock that no longer matches it fails the install
# (`uv sync --locked`) instead of leaving the new dependency out.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# uv itself comes from PyPI (pinned), installed beside the venv's packages, not among them.
UV_VERSION := 0.13.9
UV_DIR := $(VENV)/.uv
UV := $(UV_DIR)/bin/uv
UV_SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync --locked --quiet
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: install install-test run test lint format bench clean chaos lock browser

$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --target $(UV_DIR) uv==$(UV_VERSION)

# --inexact: test tools installed by an earlier `make test` stay.
$(RUN_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_SYNC) --inexact
	touch $@

$(TEST_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_SYNC) --extra test
	touch $@

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# Re-resolve uv.lock from pyproject.toml (PyPI); commit both together.
lock: | $(UV)
	$(UV) lock

# Debian's chromium for the browser test (tests/e2e/test_browser.py), which skips, saying
# why, where it is missing; Playwright never downloads a browser of its own here.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser test will be skipped" >&2

run: install
	$(BIN)/dialer run

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Real processes on loopback, a fault under load, one table row per scenario (docs/RELIABILITY.md).
# CHAOS_ARGS='--only 1,6 --scale 0.5' narrows it.
chaos: install-test
	$(BIN)/python -m chaos.run $(CHAOS_ARGS)

# Dialer against the Temporal floor on a private dev server (bench/README.md); not part of
# `make test`. BENCH_ARGS='--full' for the long run, '--only throughput --reps 1' to narrow.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): bench/requirements.txt $(TEST_STAMP)
	$(UV) pip install --quiet --python $(BIN)/python -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: install-test $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# mypy reads [tool.mypy] in pyproject.toml: strict, over the product, tests, bench, chaos, tools.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .mypy_cache *.egg-info
