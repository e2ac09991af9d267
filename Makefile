# The two commands a newcomer runs (README):  make quickstart   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/quickstart.yaml

.PHONY: setup quickstart test test-fast lint format clean

setup:
	bash scripts/setup.sh

quickstart: setup
	$(VENV)/bin/edge-distill run $(CONFIG) --resume

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache
