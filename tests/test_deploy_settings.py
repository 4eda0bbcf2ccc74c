"""A wrong number in the worker function's settings stops its cold start, naming it.

On the Lambda path the settings catalog's numbers are checked when the runtime is
built (SPOOL_CACHE_TTL=abc: run_jobs raises ConfigError before it reads a message).
SPOOL_SQS_VISIBILITY_TIMEOUT and SPOOL_HEARTBEAT_SECONDS were read only once a
batch ran: the function started, /health answered 200, and every batch failed
(a bare `invalid literal for int()` for the first), so every message was handed
back until it reached the SQS DLQ; a negative timeout quietly turned the visibility
heartbeat off.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import lambda_runner as lr
    import app
    try:
        app.run_jobs({{"Records": []}}, lr.Context(300_000))
    except Exception as exc:
        print("refused:", type(exc).__name__, exc)
    else:
        print("started")
    """
)


def cold_start(tmp_path: Path, **settings: str) -> str:
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS="lambda-runner-key-0123456789=lambda",
        **settings,
    )
    result = subprocess.run(
        [sys.executable, "-c", CHILD.format(tests=str(ROOT / "tests"))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_well_formed_worker_environment_starts(tmp_path: Path) -> None:
    assert cold_start(tmp_path, SPOOL_SQS_VISIBILITY_TIMEOUT="480") == "started"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPOOL_CACHE_TTL", "abc"),  # checked before this test: the shape expected
        ("SPOOL_SQS_VISIBILITY_TIMEOUT", "abc"),
        ("SPOOL_SQS_VISIBILITY_TIMEOUT", "-3"),
        ("SPOOL_HEARTBEAT_SECONDS", "abc"),
    ],
)
def test_a_wrong_number_refuses_the_cold_start_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    answer = cold_start(tmp_path, **{name: value})
    assert answer.startswith("refused: ConfigError"), answer
    assert name in answer


def test_a_dynamodb_store_without_its_queue_refuses_a_lambda_cold_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ?queue= no message is sent: on Lambda every job was stored, answered 201
    and never run. A polling worker off Lambda may still go without one."""
    from chalicelib.config import ConfigError
    from chalicelib.storage import open_store

    url = "dynamodb://jobs?endpoint=http://127.0.0.1:9&region=us-east-1"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "spool-dev-run_jobs")
    with pytest.raises(ConfigError, match=r"needs \?queue="):
        open_store(url)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    open_store(url).close()  # off Lambda: accepted (nothing is contacted yet)
