# Two commands: `make run` starts a local broker, `make test` runs every check.
# Each target creates .venv and installs what is missing; reruns are quick.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
# The editable install is strict (a tree of links to the package's files, so only `tidelog`
# is importable): a module added or removed needs a re-install, so the stamps depend on the
# list of the package's files, rewritten only when it changes.
MODULE_LIST := $(VENV)/.modules
MODULES := $(sort $(wildcard *.py py.typed) $(shell find broker client storage -name '*.py'))
INSTALL := $(BIN)/python -m pip install --quiet --config-settings editable_mode=strict

.PHONY: run test lint typecheck unit bench bench-smoke clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(MODULE_LIST): FORCE | $(BIN)/python
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(RUN_STAMP): pyproject.toml $(MODULE_LIST)
	$(INSTALL) -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(MODULE_LIST)
	$(INSTALL) -e '.[dev]'
	touch $@ $(RUN_STAMP)

$(BENCH_STAMP): pyproject.toml $(MODULE_LIST)
	$(INSTALL) -e '.[dev,bench]'
	touch $@ $(DEV_STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/tidelog dev

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.codec
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench run

clean:
	rm -rf $(VENV) tidelog-data build
