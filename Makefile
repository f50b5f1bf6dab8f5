# Quick start: `make train` (install + a short default training) and `make test` (install + the test suite).
# Both build a local virtual environment from the pinned CPU requirements; nothing is installed system-wide.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.dacer2-installed
RAY_STAMP := $(VENV)/.dacer2-ray-installed

.PHONY: install install-ray train sweep test test-slow gpu-check bench results clean

# --no-build-isolation: the C++ extension builds against the pinned CPU torch, never a freshly resolved CUDA one.
$(STAMP): requirements-cpu.txt pyproject.toml setup.py $(wildcard csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Ray Tune for dacer2-sweep and ONNX for dacer2-export: optional extras, so only the tests (which run small sweeps
# and check an exported file with onnxruntime) install them.
$(RAY_STAMP): $(STAMP) requirements-ray.txt requirements-export.txt
	$(BIN)/pip install -q -r requirements-ray.txt -r requirements-export.txt
	touch $(RAY_STAMP)

install-ray: $(RAY_STAMP)

train: install
	$(BIN)/dacer2-train $(ARGS)

sweep: install-ray
	$(BIN)/dacer2-sweep $(ARGS)

# The benchmarks run once in smoke mode (no timing) so their code cannot rot; `make bench` measures.
test: install-ray
	$(BIN)/python -m pytest tests $(ARGS)
	$(BIN)/python -m pytest benchmarks --benchmark-disable --bench-no-save -q

# The tests CI leaves out (marked `extended`): the Triton kernels at production shapes under the interpreter.
test-slow: install-ray
	$(BIN)/python -m pytest tests -m extended $(ARGS)

# On a machine with an NVIDIA GPU, in an environment holding CUDA torch, triton and dacer2[test]
# (not the CPU venv above): CUDA tests, the CUDA benchmark grid and a short GPU training run.
gpu-check:
	PYTHON=$(PYTHON) .ci/gpu-check

# docs/results.md's tables and figures, regenerated from the run files committed under results/.
results: install
	$(BIN)/python results/build_page.py

bench: install
	$(BIN)/python -m pytest benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
