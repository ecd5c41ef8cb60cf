# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv and installs the package when missing; both are idempotent.
# `make wheel-check` builds the wheel and runs it, installed, from outside the repository (CI runs it too).
PYTHON ?= python3
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs PyTorch's CPU-only build of the pinned torch/torchvision
# first (no 3 GB of CUDA libraries); pip then keeps it, as 2.14.1+cpu satisfies torch==2.14.1. Needs that index.
TORCH_INDEX ?=
TORCH_PINS := $(shell grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install wheel-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) $(TORCH_PINS))
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c 'from mlattack.cli import warm_help_cache; warm_help_cache()'  # `<command> --help` at once
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlattack demo

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -q

wheel-check: $(STAMP)
	VENV_PYTHON=$(abspath $(BIN)/python) .ci/wheel-check

lint: $(STAMP)
	$(BIN)/python -m ruff check --fix .
	$(BIN)/python -m ruff format .
