# phonon-outbound — the targets the README names.
SHELL := /bin/bash
PYTHON_VERSION ?= 3.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A pyenv-managed interpreter when there is one, else python3.13 on PATH.
BOOTSTRAP_PY := $(shell PYENV_VERSION=$(PYTHON_VERSION) pyenv which python3.13 2>/dev/null || command -v python3.13 || command -v python3)

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml layers/outbound/requirements.txt
	@test -x $(PY) || $(BOOTSTRAP_PY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/phonon-outbound run --flow-id DemoFlw1 events/sample-contacts.csv

lint: setup
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/ruff check layers functions tests

test: setup lint
	$(PY) -m pytest -q

bench: setup
	$(PY) -m tests.bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outbound-reports
