"""moto's in-process mock reaches every botocore session, whenever it was made.

moto intercepts a request through a handler it adds to botocore's BUILTIN_HANDLERS
when moto.core is first imported; a session copies that list when it is made. The
store's clients come from one session per process (dynamodb_aws._boto_session), so
when a test process made it before anything imported moto (a test against
moto_server, which runs in another process, ran first on that xdist worker), every
later in-process `mock_aws()` test used a session without moto's handler and its
requests went for dynamodb.us-east-1.amazonaws.com: the network guard failed them
(tests/test_redrive_bound.py's four DynamoDB cases, in some `-n 2` orders; every
time after tests/test_chaos_s49_moto_table_lost.py in one process). conftest now
imports moto.core before any test runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mock_aws_answers_clients_of_a_session_made_before_moto_was_imported() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "tests/moto_session_probe.py",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout, run.stdout[-3000:]
