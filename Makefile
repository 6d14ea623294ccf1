# `make repro` runs the pipeline, `make test` the tests; each creates .venv on first use.
VENV := .venv
# Any Python that the pinned TensorFlow and NumPy support (3.11-3.13): `make PYTHON=python3.12 ...` picks one.
PYTHON ?= python3
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: repro test lint plots bench

$(VENV)/installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' 2>/dev/null || { \
	  echo "make: '$(PYTHON)' is not Python 3.11-3.13 ($$($(PYTHON) --version 2>&1)); install one and run" \
	       "e.g. 'make PYTHON=python3.12 $(MAKECMDGOALS)'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
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
