# Quick start: `make train` (install + a short default training) and `make test` (install + the test suite).
# Both build a local virtual environment from the pinned CPU requirements; nothing is installed system-wide.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.dacer2-installed

.PHONY: install train test bench clean

# --no-build-isolation: the C++ extension builds against the pinned CPU torch, never a freshly resolved CUDA one.
$(STAMP): requirements-cpu.txt pyproject.toml setup.py $(wildcard csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/dacer2-train $(ARGS)

# The benchmarks run once in smoke mode (no timing) so their code cannot rot; `make bench` measures.
test: install
	$(BIN)/python -m pytest tests $(ARGS)
	$(BIN)/python -m pytest benchmarks --benchmark-disable --bench-no-save -q

bench: install
	$(BIN)/python -m pytest benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
