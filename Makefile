# make demo | make test | make lab | make report | make bench: each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint lab report bench clean

# Debian packages the native feed handler builds against (conda: see environment.yml)
NATIVE_HEADERS := /usr/include/boost/beast.hpp /usr/include/simdjson.h /usr/include/openssl/ssl.h
NATIVE_PACKAGES := libboost-dev libsimdjson-dev libssl-dev

$(STAMP): pyproject.toml setup.py workbench/feed/_feed_build.py workbench/feed/_native_build.py \
		$(wildcard csrc/*) $(wildcard csrc/native/*)
	@for h in $(NATIVE_HEADERS); do test -e $$h || missing=1; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(NATIVE_PACKAGES) >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(NATIVE_PACKAGES) >/dev/null; }; fi
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
	rm -rf $(VENV) build *.egg-info workbench/_feed*.so workbench/_native*.so
