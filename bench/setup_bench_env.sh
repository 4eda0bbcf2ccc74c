#!/usr/bin/env bash
# Create .bench-venv: the queues Spool is compared with, kept out of Spool's own
# environment so their dependencies never leak into it. Used by bench/pg_bench.py
# (pgqueuer, Procrastinate) and bench/redis_bench.py (RQ, Huey, Celery).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.bench-venv
test -d "$VENV" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip<26.3"
"$VENV/bin/python" -m pip install --quiet \
  "pgqueuer>=0.19" "asyncpg>=0.29" "uvloop>=0.19" \
  "procrastinate>=3.0" \
  "psycopg[binary,pool]>=3.2" \
  "tqdm>=4.66"
# The Redis queues bench/redis_bench.py compares with, pinned so runs compare.
"$VENV/bin/python" -m pip install --quiet \
  "rq==3.0.0" "huey==3.5.4" "celery[redis]==5.7.0" "redis>=5"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("pgqueuer", "procrastinate", "psycopg", "asyncpg", "rq", "huey", "celery", "redis"):
    print(f"{name} {version(name)}")
PY
