# nirvana-sim. `make` alone prints this help; `make run` and `make test` install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= experiments/default.yaml
OUT ?= results/default
# The default experiment's trace: 20,000 synthetic DiffusionDB-style requests (~6 h at DiffusionDB's
# rate) from real prompts, embedded with minilm. Deterministic; built once (a few minutes on 2 cores).
SYNTH_TRACE := traces/synth/default.parquet

.DEFAULT_GOAL := help
.PHONY: help run traces test test-slow test-all lint golden bench paper clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The package is installed editable (`pip install -e .`): `python -m sim` and the console script
# `nirvana-sim` then work from any directory and still run this checkout's code and data.
$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime $(SYNTH_TRACE)  ## run the default experiment (tables and plots in results/default)
	$(PY) -m sim run $(EXPERIMENT) --out $(OUT) --overwrite

traces: $(SYNTH_TRACE)  ## build the default experiment's synthetic trace

paper: $(VENV)/.runtime $(SYNTH_TRACE)  ## the paper's experiments (a)-(d) beside its published values, in results/paper-*
	$(PY) -m sim paper all --overwrite

$(SYNTH_TRACE): experiments/synth/default.yaml | $(VENV)/.runtime
	$(PY) -m sim trace synth --requests 20000 --seed 0 --config experiments/synth/default.yaml --out $@

test: $(VENV)/.dev  ## install and run the test suite (without tests marked slow)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(VENV)/.dev  ## run only the tests marked slow
	$(PY) -m pytest -m slow -q

test-all: $(VENV)/.dev  ## run every test
	$(PY) -m pytest -q

lint: $(VENV)/.dev  ## ruff and mypy
	$(PY) -m ruff check sim tests benchmarks
	$(PY) -m mypy sim

golden: $(VENV)/.dev  ## regenerate tests/golden/*.json (review the diff before committing)
	$(PY) -m tests.golden_gen

bench: $(VENV)/.runtime  ## speed benchmarks (reported, never asserted)
	$(PY) benchmarks/run.py

clean:  ## remove the virtualenv and results
	rm -rf $(VENV) results
