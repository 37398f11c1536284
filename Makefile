# Set-up and entry points. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# A Python >= 3.12: first on PATH, then under pyenv (whose shims fail unless told the version).
PYTHON_SYSTEM := $(shell \
  for c in python3.13 python3.12 python3; do \
    p=$$(command -v $$c 2>/dev/null) || continue; \
    $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
  done; \
  root=$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv); \
  for p in $$(ls -d $$root/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do \
    $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
  done)

# On small machines PyTorch's OpenMP threads spin while waiting for each other, and any
# other busy process (a DataLoader worker) then slows every op to ~15 ms: let them sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-fast demo lint bench bench-quick clean

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON_SYSTEM)" ]; then \
	  echo "error: stsun-lightning needs Python >= 3.12 (TorchGeo 0.10 requires it)."; \
	  echo "       None was found on PATH (python3.13, python3.12, python3) nor under pyenv."; \
	  echo "       Install one (e.g. 'pyenv install 3.12') and rerun."; exit 1; fi
	@echo "Using $(PYTHON_SYSTEM) ($$($(PYTHON_SYSTEM) --version))"
	@[ -x $(PY) ] || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m stsun_lightning.demo --config configs/demo.yaml

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Every benchmark in sequence, then benchmarks/results/README.md (see benchmarks/README.md).
bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
