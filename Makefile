# bookstream: one-command set-up on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make demo   - create .venv, install everything, install redis-server if missing, run the demo
#   make test   - same set-up, then the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := -e services/core -e services/lending -e services/shelving -e cli
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck check redis clean

$(STAMP): services/*/pyproject.toml cli/pyproject.toml operator/pyproject.toml requirements-dev.txt $(wildcard requirements-k8s.txt)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PACKAGES) -e 'operator[test]' -r requirements-dev.txt $(if $(wildcard requirements-k8s.txt),-r requirements-k8s.txt)
	touch $(STAMP)

install: $(STAMP)

# redis-server from Debian when it is missing and we are allowed to install (root or sudo).
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; \
	  else echo "redis-server is missing: install it (apt-get install redis-server)"; exit 1; fi; }

demo: install redis
	$(BIN)/bookstream demo

test: install redis
	$(BIN)/pytest $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy services/core/bookstream_core services/lending/bookstream_lending services/shelving/bookstream_shelving cli/bookstream operator/bookstream_operator

check: lint typecheck test

clean:
	rm -rf $(VENV) .bookstream .pytest_cache .mypy_cache .ruff_cache

-include deploy/images.mk
