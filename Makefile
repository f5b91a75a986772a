# infodecomp: `make test` and `make demo` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export WANDB_MODE ?= offline
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install test test-all demo bench bench-quick lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# one pytest worker per core (pytest-xdist; tests/conftest.py gives each worker one thread)
test: $(STAMP)
	$(PY) -m pytest -n auto

test-all: $(STAMP)
	$(PY) -m pytest -m ''

# Train the default experiment (shapes world, attribute labels) on the CPU, then analyse it
# (the report goes to outputs/reports/shapes).
# An interrupted demo continues where it stopped (the newest run's last.ckpt, the report's
# finished steps); a finished one is reported again.
# It ends with its wall time per phase (the report's line gives each of its steps).
# 64 draws per item: the default model's SEs then stay below those of the earlier, smoother
# [32, 64] model at 32 draws (docs/trust.md, "The default demo on three seeds").
demo: $(STAMP)
	@start=$$(date +%s); \
	$(PY) train.py --ckpt_path last && trained=$$(date +%s) && \
	$(PY) analyze.py report outputs/runs/shapes --overwrite --n-draws 64 && end=$$(date +%s) && \
	echo "make demo wall time: $$((end - start)) s (training $$((trained - start)) s, report $$((end - trained)) s)"

bench-quick: $(STAMP)
	$(PY) benchmarks/estimators.py --quick

bench: $(STAMP)
	$(PY) benchmarks/estimators.py --json outputs/benchmarks/estimators.json
	$(PY) benchmarks/baselines.py --json outputs/benchmarks/baselines.json
	$(PY) benchmarks/training.py --json outputs/benchmarks/training.json
	$(PY) benchmarks/pid.py --json outputs/benchmarks/pid.json
	$(PY) benchmarks/scaling.py --json outputs/benchmarks/scaling.json

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs wandb lightning_logs .pytest_cache .ruff_cache
