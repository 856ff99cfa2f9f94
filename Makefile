# tabfm: the one entry point. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.tabfm-deps
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all build demo test test-rust test-python bench dagzoo-venv lint format clean

all: test

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Dependencies (torch is a few GB: installed once, kept in .venv). Re-run when pyproject changes.
$(DEPS_STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet "maturin>=1.9.4,<2"
	$(VPY) -m pip install --quiet -e ".[torch,dev,bench]"
	touch $@

# Release build of the extension into the virtual environment (incremental).
build: $(DEPS_STAMP)
	$(VPY) -m maturin develop --release --quiet

# The main job: draw from every prior, pretrain the tiny in-context model on the CPU for a few
# minutes (resumes if run again), then evaluate it against the baselines on real datasets.
DEMO_RUN := runs/demo
demo: build
	$(VPY) -m tabfm.prior.demo
	$(VENV)/bin/tabfm pretrain --config configs/icl-tiny.yaml --checkpoint-dir $(DEMO_RUN) \
		--set data.stages.0.steps=1100 --set train.max_minutes=6
	$(VENV)/bin/tabfm evaluate --checkpoint $(DEMO_RUN) --splits 3 --out $(DEMO_RUN)/eval

test-rust:
	cargo test --workspace --release

test-python: build
	$(VPY) -m pytest -q

test: build test-rust test-python

# dagzoo 0.20.0 (graph-prior peer of benches/test_graph_throughput.py) needs Python >= 3.13: its own
# virtual environment, created once and kept (torch comes with it from PyPI, a few GB).
# Override with `make bench DAGZOO_PYTHON=/path/to/python3.13`.
DAGZOO_PYTHON ?= $(firstword $(wildcard /root/.pyenv/versions/3.13.0/bin/python3.13) \
	$(shell command -v python3.13 2>/dev/null) python3.13)
DAGZOO_VERSION := 0.20.0
DAGZOO_VENV := .venv-dagzoo
DAGZOO_STAMP := $(DAGZOO_VENV)/.dagzoo-$(DAGZOO_VERSION)

$(DAGZOO_STAMP):
	$(DAGZOO_PYTHON) -m venv $(DAGZOO_VENV)
	$(DAGZOO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DAGZOO_VENV)/bin/python -m pip install --quiet "dagzoo==$(DAGZOO_VERSION)"
	touch $@

dagzoo-venv: $(DAGZOO_STAMP)

# Benchmarks against the peers (TabICL 2.2.0; dagzoo 0.20.0 for graph_scm), results in bench-results/.
bench: build $(DAGZOO_STAMP)
	mkdir -p bench-results
	$(VPY) -m pytest benches --benchmark-only --benchmark-json=bench-results/prior.json \
		--benchmark-columns=min,median,max,rounds -p no:randomly -q
	$(VPY) benches/report.py bench-results/prior.json

lint: $(DEPS_STAMP)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VPY) -m ruff check python tests benches
	$(VPY) -m ruff format --check python tests benches

format: $(DEPS_STAMP)
	cargo fmt --all
	$(VPY) -m ruff check --fix python tests benches
	$(VPY) -m ruff format python tests benches

clean:
	rm -rf target dist bench-results python/tabfm/*.so
