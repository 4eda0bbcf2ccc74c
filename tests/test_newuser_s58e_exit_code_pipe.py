"""A command's exit code survives a reader that stops reading (`... | head -3`).

Found by following the README as a new user (helper E, s58): `spool status J --wait
1m | head -3` in a script with `set -o pipefail` exited 0 for a cancelled job, and for
a dead one, where `spool --help` promises 4 ("the job finished but did not succeed").
main() reads a BrokenPipeError as `spool jobs | head` (the reader had what it wanted:
exit 0), which is right for a listing but wiped out an exit code that reports what was
found: `status --wait`'s 3 and 4 and `db status`'s 3 (migrations pending), locally and
against a server. The code is decided before the answer is printed; the printing now
cannot undo it. Each case closes the pipe's read end before the command writes, so the
write always fails, as `head` exiting first makes it fail at random.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.job_commands import EXIT_JOB_FAILED, EXIT_WAIT_TIMEOUT
from tests import pg_support
from tests.apikit import KEY_A
from tests.procs import guarded_env
from tests.served import served

SPOOL = Path(sys.executable).with_name("spool")


def _spool(
    *argv: str, cwd: Path, env: dict[str, str], closed_stdout: bool = False
) -> tuple[int, str]:
    """Run `spool`; with closed_stdout its stdout is a pipe nobody reads any more."""
    if not closed_stdout:
        done = subprocess.run(
            [str(SPOOL), *argv], cwd=cwd, env=guarded_env(**env), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.returncode, done.stdout
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone: every write to the pipe fails (EPIPE)
    try:
        done = subprocess.run(
            [str(SPOOL), *argv],
            cwd=cwd,
            env=guarded_env(**env),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


@pytest.fixture
def local_store(tmp_path: Path) -> dict[str, str]:
    return {"SPOOL_STORE_URL": f"sqlite:///{tmp_path}/spool.db", "SPOOL_DEMO_HANDLERS": "true"}


def _later_job(tmp_path: Path, env: dict[str, str], *, cancel: bool) -> str:
    _, out = _spool("enqueue", "echo", "--delay", "1h", cwd=tmp_path, env=env)
    job_id = out.split()[0]
    if cancel:
        _spool("cancel", job_id, cwd=tmp_path, env=env)
    return job_id


@pytest.mark.parametrize("shape", [[], ["--json"]], ids=["table", "json"])
def test_a_cancelled_job_is_exit_4_locally_whoever_reads_the_answer(
    tmp_path: Path, local_store: dict[str, str], shape: list[str]
) -> None:
    job_id = _later_job(tmp_path, local_store, cancel=True)
    code, _ = _spool(
        "status", job_id, "--wait", "1s", *shape, cwd=tmp_path, closed_stdout=True, env=local_store
    )
    assert code == EXIT_JOB_FAILED


def test_a_wait_that_runs_out_is_exit_3_locally_whoever_reads_the_answer(
    tmp_path: Path, local_store: dict[str, str]
) -> None:
    job_id = _later_job(tmp_path, local_store, cancel=False)
    code, _ = _spool(
        "status", job_id, "--wait", "0", cwd=tmp_path, closed_stdout=True, env=local_store
    )
    assert code == EXIT_WAIT_TIMEOUT


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with served(tmp_path / "server") as server:
        yield {"SPOOL_URL": f"http://127.0.0.1:{server.port}", "SPOOL_API_KEY": KEY_A}


@pytest.mark.parametrize("shape", [[], ["--json"]], ids=["table", "json"])
def test_a_cancelled_job_is_exit_4_against_a_server_whoever_reads_the_answer(
    tmp_path: Path, server_env: dict[str, str], shape: list[str]
) -> None:
    job_id = _later_job(tmp_path, server_env, cancel=True)
    code, _ = _spool(
        "status", job_id, "--wait", "1s", *shape, cwd=tmp_path, closed_stdout=True, env=server_env
    )
    assert code == EXIT_JOB_FAILED


def test_pending_migrations_are_exit_3_whoever_reads_db_status(tmp_path: Path) -> None:
    with pg_support.fresh_schema(migrate=False) as url:
        code, err = _spool(
            "db", "status", cwd=tmp_path, closed_stdout=True, env={"SPOOL_STORE_URL": url}
        )
    assert code == 3, err
    assert "pending: run `spool db migrate`" in err  # stderr is still there to say it


def test_a_listing_cut_short_is_still_exit_0(tmp_path: Path, local_store: dict[str, str]) -> None:
    """What main() reads a closed pipe as stays true where no code reports a finding."""
    _later_job(tmp_path, local_store, cancel=False)
    code, _ = _spool("jobs", cwd=tmp_path, closed_stdout=True, env=local_store)
    assert code == 0
