# Every target creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := exporter cloudstack_simulator demo tests deploy $(wildcard benchmarks)

.PHONY: demo test lint typecheck check bench simulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: the simulator with a realistic workload and the exporter scraping it
demo: $(STAMP)
	$(BIN)/python -m demo

## test: lint, type checks and the whole test suite
test: lint typecheck
	$(BIN)/python -m pytest --cov

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/events.py
	$(BIN)/python benchmarks/jobspage.py

simulator: $(STAMP)
	$(BIN)/python -m cloudstack_simulator

## mixin: render deploy/mixin into the rule files, the dashboard and the alert reference
.PHONY: mixin
mixin: $(STAMP)
	$(BIN)/python deploy/render_mixin.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
