# `make repro` runs the pipeline, `make test` the tests; each creates .venv on first use.
VENV := .venv
# Any Python that the pinned TensorFlow and NumPy support (3.11-3.13): `make PYTHON=python3.12 ...` picks one.
PYTHON ?= python3
PY := $(VENV)/bin/python
# TensorFlow build: cpu (tensorflow-cpu, the default) or gpu (tensorflow[and-cuda]: NVIDIA GPUs on Linux).
# One per .venv: the two overwrite each other's files, so switching (make repro TF=gpu) removes the other first.
# Once switched, later commands keep the installed build unless TF= says otherwise.
TF ?= $(if $(wildcard $(VENV)/installed-gpu),gpu,cpu)
ifeq ($(filter $(TF),cpu gpu),)
$(error TF must be cpu or gpu, got '$(TF)')
endif
OTHER_TF := $(if $(filter cpu,$(TF)),tensorflow,tensorflow-cpu)
INSTALLED := $(VENV)/installed-$(TF)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: repro study test lint plots bench sweep-shard docs docs-check

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' 2>/dev/null || { \
	  echo "make: '$(PYTHON)' is not Python 3.11-3.13 ($$($(PYTHON) --version 2>&1)); install one and run" \
	       "e.g. 'make PYTHON=python3.12 $(MAKECMDGOALS)'" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	rm -f $(VENV)/installed-*
	$(PY) -m pip uninstall -q -y $(OTHER_TF) 2>/dev/null || true
	$(PY) -m pip install -q -e '.[dev,$(TF)]'
	touch $@

# params.yaml checked first by the stages' own strict reader: one line for a bad file, where DVC could hang on it
repro: $(INSTALLED)
	$(PY) -m tlpipe.core.params
	dvc repro

# The controls study (study/dvc.yaml, docs/study.md): after the main pipeline's sweep, which it runs first if stale.
study: $(INSTALLED)
	$(PY) -m tlpipe.core.params
	dvc repro study/dvc.yaml

# Two workers (pytest-xdist), each test file on one of them: a file's end-to-end copy of the pipeline is built once.
test: $(INSTALLED)
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

node_modules/installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Offline plots page: Vega from node_modules instead of a CDN (see .dvc/plots_template.html).
plots: $(INSTALLED) node_modules/installed
	dvc plots show

# Reference vs project timing (docs/performance.md); needs the data, so `download` runs first.
bench: $(INSTALLED)
	dvc repro download
	$(PY) benchmarks/run.py --out results/report.json

# One machine's share of the label-budget sweep, pushed with its run-cache to the DVC remote (docs/scaling-out.md):
# make sweep-shard SHARD=2/4
sweep-shard: $(INSTALLED)
	@test -n "$(SHARD)" || { echo "make: sweep-shard needs SHARD=i/n, e.g. make sweep-shard SHARD=2/4" >&2; exit 1; }
	$(PY) -m tlpipe.apps.shard $(SHARD)

# Every marked table in README.md and docs/*.md, rendered from the results files in the workspace: after your own
# `make repro`, your numbers. `docs-check` fails where a document differs from that rendering; .ci/run runs it on
# the committed files, so a user's `make test` never depends on the results they commit.
docs: $(INSTALLED)
	$(PY) tools/doc_tables.py --write

docs-check: $(INSTALLED)
	$(PY) tools/doc_tables.py --check
