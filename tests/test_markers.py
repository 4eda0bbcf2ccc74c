"""`-m postgres` and `-m aws` select the tests docs/testing.md says they do.

docs/testing.md gave `pytest -m "not slow and not postgres and not aws"` as the
fast engine and API tests, but the marks were written by hand on a few modules:
it left out 138 of 6,995 tests and ran every Postgres test of
tests/test_postgres_pool_reconnect.py, every DynamoDB test of
tests/test_dynamodb_shards.py and each `[postgres]` and `[dynamodb]` case of the
store contract. tests/conftest.py now marks a test by what its id names: its
module, its name or its parameters (the stores of tests/backends.py).
"""

from __future__ import annotations

import subprocess
import sys

from tests.procs import ROOT, guarded_env

FILES = [
    "tests/test_postgres_pool_reconnect.py",
    "tests/test_dynamodb_shards.py",
    "tests/test_attempt_history_stores.py",
    "tests/test_retry.py",
]


def collected(marks: str) -> list[str]:
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--collect-only", "-q", "-m", marks, *FILES],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode in (0, 5), ran.stdout + ran.stderr  # 5: nothing selected
    return [line for line in ran.stdout.splitlines() if "::" in line]


def test_postgres_selects_the_postgres_module_and_the_postgres_cases() -> None:
    chosen = collected("postgres")
    modules = {test.split("::")[0] for test in chosen}
    assert "tests/test_postgres_pool_reconnect.py" in modules
    assert any(test.startswith("tests/test_attempt_history_stores.py") for test in chosen)
    assert all("postgres" in test.lower() for test in chosen), chosen


def test_aws_selects_the_dynamodb_module_and_the_dynamodb_cases() -> None:
    chosen = collected("aws")
    assert any(test.startswith("tests/test_dynamodb_shards.py") for test in chosen)
    assert any(test.startswith("tests/test_attempt_history_stores.py") for test in chosen)
    assert all("dynamodb" in test.lower() for test in chosen), chosen


def test_the_fast_selection_leaves_both_out_and_keeps_the_engine() -> None:
    chosen = collected("not slow and not postgres and not aws")
    assert not [t for t in chosen if "postgres" in t.lower() or "dynamodb" in t.lower()]
    assert any(test.startswith("tests/test_retry.py") for test in chosen)
    assert any("sqlite" in test for test in chosen)  # the stores without a server stay
