"""docs/aws.md's offline flow (`create=1`) with a bucket or queue name AWS refuses.

`SPOOL_STORE_URL=dynamodb://jobs?queue=jobs&bucket=b&endpoint=...&create=1` (a bucket
name too short for S3) made every command say "unexpected error: ClientError: ...
InvalidBucketName ... Rerun with SPOOL_DEBUG=1": no word of which part of which
setting to change. A queue name SQS refuses (`queue=q!x`) did the same. Both are now
the usage error a malformed URL option is (exit 2), naming the option and the rule.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.moto_proc import moto_server
from tests.procs import ROOT, guarded_env


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as moto:
        yield moto.endpoint


@pytest.mark.parametrize(
    ("names", "said"),
    [
        ("queue=jobs1&bucket=b", "bucket 'b' is no S3 bucket name AWS takes"),
        ("queue=q!x&bucket=jobs-bucket", "queue 'q!x' is no SQS queue name AWS takes"),
    ],
)
def test_a_name_aws_refuses_is_a_usage_error_naming_the_option(
    tmp_path: Path, endpoint: str, names: str, said: str
) -> None:
    url = f"dynamodb://jobs1?{names}&endpoint={endpoint}&create=1"
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "jobs"],
        cwd=tmp_path, env=guarded_env(PYTHONPATH=str(ROOT), SPOOL_STORE_URL=url),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "SPOOL_STORE_URL" in done.stderr, done.stderr
    assert "unexpected error" not in done.stderr and done.stderr.count("\n") == 1
