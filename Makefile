# Every target sets the AWS guard variables so boto3 never reaches for the
# metadata address (169.254.169.254): nothing leaves 127.0.0.0/8.
export AWS_EC2_METADATA_DISABLED := true
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# aws-sam-cli pins its own boto3 and click: a tool environment of its own.
SAM := .tools/sam-venv/bin/sam

.PHONY: run test lint typecheck pytest venv tools bench clean package

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip<26.3"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

$(SAM): infra/install-sam.sh
	PYTHON=$(PYTHON) bash infra/install-sam.sh

tools: $(SAM)

run: $(STAMP)
	$(BIN)/spool serve --port $${PORT:-8000}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy app.py chalicelib local

pytest: $(STAMP) $(SAM)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.sqlite_bench

# The CloudFormation (SAM) template for AWS: Chalice's functions and API plus
# infra/resources.json (table, queues, bucket, scoped roles). Needs no AWS access.
STAGE ?= dev
PACKAGE_DIR ?= out
package: $(STAMP)
	$(BIN)/chalice package --stage $(STAGE) --merge-template infra/resources.json $(PACKAGE_DIR)/

clean:
	rm -rf $(VENV) .tools .spool .pytest_cache .mypy_cache .ruff_cache
