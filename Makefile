# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spikeir-installed

.PHONY: setup demo test lint docs wheel-check bench claims browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Keep a torch that is already importable; otherwise take the pinned CPU-capable wheel
	# (on these machines torch==2.13.0 resolves to a local CPU wheel, never a CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikeir demo -o demo_out --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools examples

# The web-page test drives Debian's chromium; install it where we can (root with apt), else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 \
	  && apt-get install -y -q chromium >/dev/null 2>&1)); } \
	  || echo "chromium could not be installed: the browser test will be skipped"

# the API site and tutorials (MkDocs + mkdocstrings), warnings are errors
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict -q

# the wheel, installed into a clean venv away from the checkout, must run on its own
wheel-check: $(STAMP)
	PYTHON=$(PYTHON) ./tools/wheel_check.sh

test: $(STAMP) lint docs browser
	$(PY) -m pytest -q --doctest-modules src/spikeir tests
	$(MAKE) --no-print-directory wheel-check

bench: $(STAMP)
	$(PY) benchmarks/bench_neurons.py --json benchmarks/results/neurons.json
	# the SpikingJelly reference is for the benchmark only, never a dependency of spikeir
	$(VENV)/bin/pip install --no-deps spikingjelly==2.0.0 loguru
	$(PY) benchmarks/bench_esdnet.py --threads 1 --json benchmarks/results/esdnet_bench.json

# CLAIMS.md and benchmarks/results/claims.json from the evidence files; an experiment whose evidence
# is missing runs first (hours on a CPU; `python benchmarks/claims.py --rerun KEY` runs one again)
claims: $(STAMP)
	$(PY) benchmarks/claims.py --run

clean:
	rm -rf $(VENV) build dist site src/*.egg-info demo_out
