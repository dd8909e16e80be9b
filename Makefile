# Two entry points: `make demo` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,demo]'
	touch $(VENV)/.installed $@

## demo: the whole staging -> production workflow on a throw-away workspace
demo: $(VENV)/.installed
	$(BIN)/python scripts/demo.py

## test: lint, type-check and the full test suite
test: $(VENV)/.installed-test
	$(BIN)/ruff check rf tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist worksteal -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check rf tests bench scripts
	$(BIN)/ruff format --check rf tests bench scripts

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/invoke.py
	$(BIN)/python bench/releases.py
	$(BIN)/python bench/observability.py
	$(BIN)/python bench/kb.py
	$(BIN)/python bench/tui.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
