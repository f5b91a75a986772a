# infodecomp: `make test` and `make demo` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export WANDB_MODE ?= offline
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install test test-all demo bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

demo: $(STAMP)
	$(PY) benchmarks/estimators.py --quick

bench: $(STAMP)
	$(PY) benchmarks/estimators.py --json outputs/benchmarks/estimators.json

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs wandb lightning_logs .pytest_cache .ruff_cache
