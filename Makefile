# nirvana-sim. `make` alone prints this help; `make run` and `make test` install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= experiments/default.yaml
OUT ?= results/default
# parallel runs of `make paper-2m` (each holds the 2M trace: ~3.5 GB)
JOBS ?= 2
# The default experiment's trace: 200,000 requests (~2.6 days at DiffusionDB's rate) of the DiffusionDB-scale
# generator calibrated on NIRVANA's LCBFU row (experiments/synth/ddb-2m.yaml; vectors mode, no embedder):
# deterministic, built in seconds. TRACE_2M is the same generator at the paper's 2M requests (~26 days).
# TEXT_TRACE: 20,000 requests of real prompts embedded with minilm (the similarity-map path; a few minutes).
SYNTH_TRACE := traces/synth/default.parquet
TRACE_2M := traces/synth/ddb-2m.parquet
TEXT_TRACE := traces/synth/text-20k.parquet

.DEFAULT_GOAL := help
.PHONY: help run traces trace-2m trace-text test test-slow test-all lint golden bench paper paper-2m clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

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

run: $(VENV)/.runtime $(SYNTH_TRACE)  ## run the default experiment (capacity sweep in results/default, latency in results/default-latency)
	$(PY) -m sim run $(EXPERIMENT) --out $(OUT) --overwrite
	$(PY) -m sim run experiments/default-latency.yaml --out $(OUT)-latency --overwrite

traces: $(SYNTH_TRACE)  ## build the default experiment's synthetic trace

trace-2m: $(TRACE_2M)  ## build the calibrated 2M-request DiffusionDB-scale trace (~2.4 GB, about a minute)

trace-text: $(TEXT_TRACE)  ## build the 20K-request text-mode trace (real prompts, minilm embeddings)

paper: $(VENV)/.runtime $(SYNTH_TRACE)  ## the paper's experiments (a)-(d) beside its published values, in results/paper-*
	$(PY) -m sim paper all --overwrite

paper-2m: $(VENV)/.runtime $(TRACE_2M)  ## experiment (a) at the paper's scale: 2M requests, exact lists (~3 min once, then ~7 min here)
	$(PY) -m sim paper capacity --trace $(TRACE_2M) --jobs $(JOBS) --out results/paper-capacity-2m --overwrite

$(SYNTH_TRACE): experiments/synth/ddb-2m.yaml | $(VENV)/.runtime
	$(PY) -m sim trace synth --mode vectors --requests 200000 --seed 0 --config experiments/synth/ddb-2m.yaml --out $@

$(TRACE_2M): experiments/synth/ddb-2m.yaml | $(VENV)/.runtime
	$(PY) -m sim trace synth --mode vectors --requests 2000000 --seed 0 --config experiments/synth/ddb-2m.yaml --out $@

$(TEXT_TRACE): experiments/synth/default.yaml | $(VENV)/.runtime
	$(PY) -m sim trace synth --requests 20000 --seed 0 --config experiments/synth/default.yaml --out $@

test: $(VENV)/.dev  ## install and run the test suite (without tests marked slow)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(VENV)/.dev  ## run only the tests marked slow
	$(PY) -m pytest -m slow -q

test-all: $(VENV)/.dev  ## run every test
	$(PY) -m pytest -q

lint: $(VENV)/.dev  ## ruff (with complexity bounds), mypy and the import-layer contracts (pyproject.toml)
	$(PY) -m ruff check sim tests benchmarks
	$(PY) -m mypy sim
	$(VENV)/bin/lint-imports

golden: $(VENV)/.dev  ## regenerate tests/golden/*.json (review the diff before committing)
	$(PY) -m tests.golden_gen

bench: $(VENV)/.runtime  ## speed benchmarks (reported, never asserted)
	$(PY) benchmarks/run.py

clean:  ## remove the virtualenv and results
	rm -rf $(VENV) results
