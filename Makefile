# make demo | make test | make lab | make report | make bench: each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint lab report bench clean

$(STAMP): pyproject.toml setup.py workbench/feed/_feed_build.py $(wildcard csrc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel cffi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m workbench.engine.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

report: $(STAMP)
	$(BIN)/workbench report

bench: $(STAMP)
	$(BIN)/python -m workbench.bench run

clean:
	rm -rf $(VENV) build *.egg-info workbench/_feed*.so
