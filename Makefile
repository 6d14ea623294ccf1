# `make repro` runs the pipeline, `make test` the tests; each creates .venv on first use.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: repro test lint plots bench

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

repro: $(VENV)/installed
	dvc repro

test: $(VENV)/installed
	$(PY) -m pytest

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .

node_modules/installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Offline plots page: Vega from node_modules instead of a CDN (see .dvc/plots_template.html).
plots: $(VENV)/installed node_modules/installed
	dvc plots show

# Reference vs project timing (README, "Performance"); needs the data, so `download` runs first.
bench: $(VENV)/installed
	dvc repro download
	$(PY) benchmarks/run.py --out benchmarks/report.json
