# Quick start: `make train` (install + a short default training) and `make test` (install + the test suite).
# Both build a local virtual environment from the pinned CPU requirements; nothing is installed system-wide.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.dacer2-installed

.PHONY: install train test bench clean

$(STAMP): requirements-cpu.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	# --no-build-isolation: build against the pinned CPU torch above, never a freshly resolved CUDA one.
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/dacer2-train $(ARGS)

test: install
	$(BIN)/python -m pytest tests $(ARGS)
	# Benchmarks once in smoke mode (no timing) so their code cannot rot; `make bench` measures.
	$(BIN)/python -m pytest benchmarks --benchmark-disable --bench-no-save -q

bench: install
	$(BIN)/python -m pytest benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
