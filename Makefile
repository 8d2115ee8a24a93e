# phonon-outbound — the targets the README names.
SHELL := /bin/bash
PYTHON_VERSION ?= 3.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A pyenv-managed interpreter when there is one, else python3.13 on PATH.
BOOTSTRAP_PY := $(shell PYENV_VERSION=$(PYTHON_VERSION) pyenv which python3.13 2>/dev/null || command -v python3.13 || command -v python3)

# Lint tools that pin their own dependencies (checkov pins boto3, so does the SAM CLI): each
# gets its own venv under tools/, created from scratch by these rules, never the project's.
TOOLS_PYTHON_VERSION ?= 3.12.1
TOOLS_PY := $(shell PYENV_VERSION=$(TOOLS_PYTHON_VERSION) pyenv which python3.12 2>/dev/null || command -v python3.12 || echo $(BOOTSTRAP_PY))
CHECKOV_VENV := tools/.venv-checkov
SAM_VENV := tools/.venv-sam
TRANSLATED := build/template.json
# Type checking of the package and the handlers (0 errors; pyproject.toml [tool.mypy]);
# `make lint` runs it between ruff and the template checks.
MYPY_CMD ?= $(VENV)/bin/mypy layers/outbound/phonon_outbound functions devkit/phonon_outbound_dev

.PHONY: setup run test lint sam-check tools browser bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml layers/outbound/requirements.txt
	@test -x $(PY) || $(BOOTSTRAP_PY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/phonon-outbound run --flow-id DemoFlw1 events/sample-contacts.csv

$(CHECKOV_VENV)/.installed: tools/requirements-checkov.txt
	rm -rf $(CHECKOV_VENV)
	$(TOOLS_PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r tools/requirements-checkov.txt
	@touch $@

# The SAM CLI runs the python3.13 builder: the runtime's interpreter must be on PATH.
$(SAM_VENV)/.installed: tools/requirements-sam.txt
	rm -rf $(SAM_VENV)
	$(BOOTSTRAP_PY) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q -r tools/requirements-sam.txt
	@touch $@

tools: $(CHECKOV_VENV)/.installed $(SAM_VENV)/.installed browser

# A headless browser for the HTML report's test (tests/unit/test_status_html.py): Debian's
# chromium-headless-shell where apt-get can install it (root, a Debian package mirror), about
# 10 s. Never fails: without it that one test is skipped and the page is checked by parsing.
browser:
	@command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && \
	        apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1; }; } ; } || \
	  echo "no headless browser: the HTML report's browser test will be skipped"

# ruff; mypy (MYPY_CMD); cfn-lint on template.yaml and on its SAM translation (cfn-lint no longer
# expands AWS::Serverless resources itself); checkov on the translation, which holds the roles,
# event source mappings and permissions SAM generates. Every checkov skip is a Metadata entry
# on its resource in template.yaml, with the reason.
lint: setup $(CHECKOV_VENV)/.installed
	$(VENV)/bin/ruff check layers functions devkit tests tools
	$(MYPY_CMD)
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) tools/sam_translate.py template.yaml $(TRANSLATED)
	$(VENV)/bin/cfn-lint $(TRANSLATED)
	$(CHECKOV_VENV)/bin/checkov --file $(TRANSLATED) --framework cloudformation --quiet --compact --skip-download

# What `sam deploy` would run first: the SAM CLI's own validation (translator + cfn-lint) and a
# build of the layer and every function (no container; arm64 wheels).
sam-check: $(SAM_VENV)/.installed
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --region us-east-1 --template template.yaml
	SAM_CLI_TELEMETRY=0 PATH="$(dir $(BOOTSTRAP_PY)):$$PATH" $(SAM_VENV)/bin/sam build --template template.yaml \
		--build-dir build/sam --cache-dir build/sam-cache --region us-east-1

# pytest-xdist: one worker per core (TEST_WORKERS=0 runs in one process). The e2e tests spend
# much of their time waiting on child processes and real-clock windows, so two workers on two
# cores halve the run (measured: 1,038 s in one process, 553 s with two). worksteal: a worker
# that runs out takes tests from the other's queue, so the long e2e tests do not end up last in
# one queue. Every test keeps its state in its own tmp_path, so workers share nothing.
# pytest's exit 5 ("no tests ran") passes through and fails the target.
TEST_WORKERS ?= auto
test: setup lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: setup
	$(PY) -m tests.bench.run_all

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(SAM_VENV) build .aws-sam .pytest_cache .ruff_cache outbound-reports
