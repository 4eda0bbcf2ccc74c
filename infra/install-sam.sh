#!/usr/bin/env bash
# Install the AWS SAM CLI into a tool environment of its own, .tools/sam-venv.
# aws-sam-cli pins its own boto3, botocore and click, so it never goes into
# .venv. `make test` runs it (tests/test_infra.py: `sam validate --lint`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# A half-made tool env (no pip: Debian without python3-venv) is made again, not reused.
PYTHON="$PYTHON" bash infra/make_venv.sh .tools/sam-venv
.tools/sam-venv/bin/python -m pip install --quiet --upgrade pip
.tools/sam-venv/bin/python -m pip install --quiet "aws-sam-cli>=1.100,<2"
.tools/sam-venv/bin/sam --version
