"""A result far over the 256 KiB limit is refused before it is encoded (stop 62, helper C).

Was (found with a real `spool worker --burst` under a 400 MB address-space limit and a
handler returning `["x" * 1000] * 100_000`, a list of one shared string: a few hundred
KB in memory, 100 MB as JSON): the worker encoded the whole result to measure it, the
encoder's join raised MemoryError, and the job was retried as a "worker error:
MemoryError" at json/encoder.py, each attempt building the same 100 MB again, until it
went dead with that error: nothing said the result was over the limit. Without a
limit the worker's memory grew by the result's encoded size (two or three times it,
in chunks and their join) on every attempt, the OOM killer's cue in a small container.

Now the worker counts what the result's JSON needs at least (its strings' lengths,
its integers' digits, a byte for each other value and each bracket or comma), and
stops counting past four times the limit: such a result goes dead on its first attempt
saying it is over the limit, without being encoded; one within that is encoded and
measured as before (the exact byte count in the error).
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from chalicelib.jsonstrict import json_text_over
from chalicelib.worker import MAX_RESULT_BYTES
from tests.procs import ROOT, SPOOL, guarded_env, run_spool

pytestmark = pytest.mark.timeout(120)

ADDRESS_SPACE = 400 * 1024 * 1024

HANDLERS = (
    "from chalicelib.handlers import handler\n\n\n"
    "@handler('bigresult', max_attempts=3, backoff=(0.0, 0.0))\n"
    "def bigresult(payload: dict) -> list:\n"
    "    return ['x' * 1000] * payload['n']  # one string, shared: small until encoded\n"
)


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_a_worker_short_of_memory_says_a_huge_result_is_over_the_limit(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    env = {"SPOOL_HANDLERS": "myapp.jobs", "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    added = run_spool(tmp_path, "enqueue", "bigresult", "--payload", '{"n": 100000}', **env)
    assert added.returncode == 0, added.stderr
    ran = subprocess.run(
        [str(SPOOL), "worker", "--burst", "--concurrency", "1"],
        cwd=tmp_path,
        env=guarded_env(**env),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        preexec_fn=_limited,
    )
    log = ran.stderr
    assert ran.returncode == 0, log
    assert "MemoryError" not in log, log
    assert "job dead event=dead" in log and "attempt=1 " in log, log
    assert f"result is more than {4 * MAX_RESULT_BYTES} bytes, over {MAX_RESULT_BYTES}" in log, log
    shown = run_spool(tmp_path, "jobs", "--state", "dead", "--json", **env)
    assert shown.returncode == 0, shown.stderr
    assert "over 262144" in shown.stdout, shown.stdout


@pytest.mark.parametrize(
    ("value", "over"),
    [
        ("x" * 100, False),
        ("x" * 2000, True),
        (["x" * 10] * 200, True),  # shared: counted each time it is written
        ({"k" * 1200: 1}, True),  # keys count too
        (10**1200, True),  # its digits, not one byte
        ([1] * 500, True),  # a byte and a comma each
        ([1] * 400, False),
        ([[[[]]]] * 10, False),
        (3.5, False),
        (None, False),
        ({1, 2}, False),  # not JSON: left to the encoder to say so
    ],
)
def test_json_text_over_counts_at_least_what_the_encoder_writes(value: object, over: bool) -> None:
    assert json_text_over(value, 1000) is over


def test_json_text_over_never_undercounts_what_the_encoder_writes() -> None:
    import json

    for value in (
        {"a": [1, 2.5, None, True, "é\n"], "b": {"c": []}},
        [10**50, -(10**20), 0, -1, "\U0001f600"],
        [[], {}, [[]], {"k": {}}],
    ):
        size = len(json.dumps(value))
        assert json_text_over(value, size) is False


def test_a_circular_value_is_counted_until_past_the_limit_not_forever() -> None:
    """The worker asks jsonstrict.is_circular before calling it over the limit, so a
    circular result is still refused as one (test_worker's circular-result tests)."""
    looped: list[object] = []
    looped.append(looped)
    assert json_text_over(looped, 1000) is True
