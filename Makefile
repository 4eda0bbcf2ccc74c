# Every target sets the AWS guard variables so boto3 never reaches for the
# metadata address (169.254.169.254): nothing leaves 127.0.0.0/8.
export AWS_EC2_METADATA_DISABLED := true
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing

PYTHON ?= python3
VENV := .venv
# PYTHON given (`PYTHON=python3.12 make run`, or exported) names .venv's interpreter:
# a .venv of another Python version is made again with it (infra/make_venv.sh; its
# --stale drops the install stamps, or make would see nothing to do). Not given, .venv
# stays on whichever Python made it.
PYTHON_GIVEN := $(if $(filter environment command override,$(origin PYTHON)),1)
ifeq ($(PYTHON_GIVEN),1)
VENV_STALE := $(shell PYTHON='$(PYTHON)' bash infra/make_venv.sh --stale $(VENV))
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` needs only what serving needs (the package, its runtime dependencies and
# Pillow for resize_image): no test, lint or AWS tooling. The dev install covers it.
SERVE_STAMP := $(VENV)/.installed-serve
# aws-sam-cli pins its own boto3 and click: a tool environment of its own.
SAM := .tools/sam-venv/bin/sam

.PHONY: run test lint typecheck pytest venv tools bench clean package

# infra/make_venv.sh makes .venv, or makes it again when an earlier try left it
# without pip (Debian without python3-venv) or on a Python older than 3.11.
$(STAMP): pyproject.toml
	PYTHON=$(PYTHON) PYTHON_GIVEN=$(PYTHON_GIVEN) bash infra/make_venv.sh $(VENV)
	$(BIN)/python -m pip install --quiet "pip<26.3"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(SERVE_STAMP)

# pip stays below 26.3 for chalice 1.34 (see $(STAMP)).
$(SERVE_STAMP): pyproject.toml
	PYTHON=$(PYTHON) PYTHON_GIVEN=$(PYTHON_GIVEN) bash infra/make_venv.sh $(VENV)
	$(BIN)/python -m pip install --quiet "pip<26.3"
	$(BIN)/python -m pip install --quiet -e ".[images]"
	touch $(SERVE_STAMP)

venv: $(STAMP)

$(SAM): infra/install-sam.sh
	PYTHON=$(PYTHON) bash infra/install-sam.sh

tools: $(SAM)

# Laptop mode: the demo handlers (echo, sleep, fail) on unless the shell says otherwise.
# exec: the server replaces the recipe's shell, so a SIGTERM sent to make's child (a
# supervisor, `kill`) reaches the server and its graceful stop instead of orphaning it.
run: $(SERVE_STAMP)
	SPOOL_DEMO_HANDLERS=$${SPOOL_DEMO_HANDLERS:-true} exec $(BIN)/spool serve --port $${PORT:-8000}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy app.py chalicelib local spool_client bench tests

# The suite on PYTEST_WORKERS parallel workers (pytest-xdist): most tests wait on
# processes, sockets, Postgres, Redis and moto rather than on the CPU. `--dist
# loadgroup` sends each test wherever a worker is free, except the groups in
# docs/testing.md (a module's tests sharing a server or a built package; the "heavy"
# crash and model tests, one at a time). PYTEST_WORKERS=0: serially, in one process.
# --durations: the 25 slowest steps close the report, where the suite's time goes.
PYTEST_WORKERS ?= 3
pytest: $(STAMP) $(SAM) lambda-wheels lambda-venv
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.sqlite_bench

# The dashboard's screenshots in docs/img, taken by its browser tests (headless chromium).
.PHONY: screenshots
screenshots: $(STAMP)
	UI_SCREENSHOTS=docs/img $(BIN)/pytest -q tests/test_ui_browser.py

# The Lambda zip's dependencies (infra/lambda_wheels.py): requirements-lambda.txt's
# wheels for one target, fetched from the registry once per change (the one step that
# needs it: `make test` runs it before pytest), then installed offline by `make package`
# into vendor/ of a Chalice project staged under PACKAGE_DIR (Chalice zips vendor/ as
# it is; requirements.txt stays empty so Chalice fetches nothing itself).
# LAMBDA_ARCH: arm64 or x86_64 (empty: infra/lambda_target.py's DEFAULT_ARCH).
# LAMBDA_TARGET=host: a zip for this machine's Python instead (what the tests run).
LAMBDA_ARCH ?=
LAMBDA_TARGET ?= lambda$(if $(LAMBDA_ARCH),-$(LAMBDA_ARCH))
WHEELS := .tools/lambda-wheels
# A Python with nothing but boto3, as Lambda's runtime has: tests/test_lambda_package.py
# runs every built-in handler from the unzipped host package in it.
LAMBDA_VENV := .tools/lambda-venv
.PHONY: lambda-wheels lambda-venv

# The CloudFormation (SAM) template for AWS: Chalice's functions and API plus
# infra/resources.json (table, queues, bucket, scoped roles); infra/finalize.py then
# sets every function's Runtime (infra/lambda_target.py) and Architectures
# (LAMBDA_ARCH; arm64 by default, about 20% less per GB-second than x86_64) and
# the stage's API-keys parameter name. Needs no AWS access.
# PACKAGE_DIR may be relative (the default is): chalice runs in the project folder, and
# took a relative output folder from there (out/project/out/sam.json), so every path
# handed on is made absolute first.
STAGE ?= dev
PACKAGE_DIR ?= out
PACKAGE_OUT = $(abspath $(PACKAGE_DIR))
package: $(STAMP) $(WHEELS)/$(LAMBDA_TARGET)/.fetched
	$(BIN)/python -m chalicelib.handler_check --stage $(STAGE)
	$(BIN)/python infra/lambda_wheels.py stage $(LAMBDA_TARGET) $(WHEELS)/$(LAMBDA_TARGET) --dest $(PACKAGE_OUT)/project
	$(BIN)/chalice --project-dir $(PACKAGE_OUT)/project package --stage $(STAGE) --merge-template $(abspath infra/resources.json) $(PACKAGE_OUT)/
	$(BIN)/python infra/finalize.py --stage $(STAGE) $(if $(LAMBDA_ARCH),--arch $(LAMBDA_ARCH)) $(PACKAGE_OUT)/sam.json
	$(BIN)/python infra/lambda_zip.py bytecode $(LAMBDA_TARGET) $(PACKAGE_OUT)/deployment.zip
	$(if $(filter host,$(LAMBDA_TARGET)),,$(BIN)/python infra/lambda_zip.py check $(PACKAGE_OUT)/sam.json $(PACKAGE_OUT)/deployment.zip)

$(WHEELS)/%/.fetched: requirements-lambda.txt infra/lambda_target.py infra/lambda_wheels.py | $(STAMP)
	$(BIN)/python infra/lambda_wheels.py download $* $(WHEELS)/$*
	touch $@

lambda-wheels: $(WHEELS)/lambda/.fetched $(WHEELS)/host/.fetched

$(LAMBDA_VENV)/.installed: | $(STAMP)
	rm -rf $(LAMBDA_VENV)
	$(BIN)/python -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/python -m pip install --quiet "boto3>=1.34"
	touch $@

lambda-venv: $(LAMBDA_VENV)/.installed

# Removes what make builds, never .spool/: that is the local job store (jobs, results,
# dead letters) and the image handlers' blobs, which a rebuild must not cost anyone.
clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache

# Mutation testing of the engine, by hand and never in `make test` (slow: minutes per
# module on 2 cores). Settings: [tool.mutmut] in pyproject.toml; docs/testing.md says how
# to read the results. MUTANTS narrows the run, e.g. make mutation MUTANTS='chalicelib.retry*'.
# mutmut keeps its work and results in mutants/ (`.venv/bin/mutmut results`, `... show NAME`).
MUTANTS ?=
MUTATION_JOBS ?= 2
MUTATION_STAMP := $(VENV)/.mutation-installed
.PHONY: mutation
$(MUTATION_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,mutation]"
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	$(BIN)/mutmut results
