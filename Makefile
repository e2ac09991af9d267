# The two commands a newcomer runs (README):  make quickstart   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/quickstart.yaml

.PHONY: setup quickstart test test-fast lint format clean

setup:
	bash scripts/setup.sh

# `edge-distill run` exits 3 when a device budget line fails. The quickstart's 20-step student is not meant to
# pass every budget (its accuracy sits below the Pi 5 profile's floor), so here that verdict is reported, not
# turned into a make error; any other failure still is one.
quickstart: setup
	@rc=0; $(VENV)/bin/edge-distill run $(CONFIG) --resume || rc=$$?; \
	if [ $$rc -eq 3 ]; then \
	  echo "make quickstart: the run finished; a device budget line failed (see bench/ and report.md in the run directory). Expected for this 20-step student; 'edge-distill run' itself exits 3 on it."; \
	  rc=0; \
	fi; exit $$rc

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
