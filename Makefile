# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv with the project's own locked dependencies: requirements/runtime.txt,
# test.txt and bench.txt, every version pinned and hashed (make lock regenerates them).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit e2e bench lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "run-watcher needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

# The locked set first (hashes checked), then the project itself without resolving again.
$(VENV)/.installed-run: pyproject.toml requirements/runtime.txt | $(BIN)/python
	$(PIP) --require-hashes -r requirements/runtime.txt
	$(PIP) --no-deps -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml requirements/test.txt | $(BIN)/python
	$(PIP) --require-hashes -r requirements/test.txt
	$(PIP) --no-deps -e .
	@touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(BIN)/run-watcher demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest tests/unit

e2e: $(VENV)/.installed-test
	$(BIN)/pytest tests/e2e

$(VENV)/.installed-bench: pyproject.toml requirements/bench.txt | $(BIN)/python
	$(PIP) --require-hashes -r requirements/bench.txt
	$(PIP) --no-deps -e .
	@touch $@ $(VENV)/.installed-run $(VENV)/.installed-test

# Regenerate the locks from pyproject.toml (keeping current pins unless they no longer fit).
lock:
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --python-version 3.11 --no-header --quiet -o requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml --extra test --universal --generate-hashes --python-version 3.11 --no-header --quiet -o requirements/test.txt
	$(BIN)/uv pip compile pyproject.toml --extra test --extra bench --universal --generate-hashes --python-version 3.11 --no-header --quiet -o requirements/bench.txt

# Every benchmark against the simulator; writes docs/BENCHMARKS.md (about 10 minutes).
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
