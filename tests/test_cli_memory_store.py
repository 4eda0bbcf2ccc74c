"""One-shot job commands refuse `memory://`, a store that lives only inside the process.

`SPOOL_STORE_URL=memory:// spool enqueue echo` printed "j_...  queued  created",
exit 0, and the job was gone when the command exited; `spool jobs` and `spool top`
there always showed an empty store. `spool serve` (its API and emulated worker share
the process) and `spool worker` (which fires the periodic schedules into it) keep it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import guarded_env


def _spool(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = guarded_env(SPOOL_STORE_URL="memory://", SPOOL_DEMO_HANDLERS="true")
    env.pop("SPOOL_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["enqueue", "echo"], ["jobs"], ["status", "j_" + "0" * 32], ["cancel", "j_" + "0" * 32],
     ["dlq", "list"], ["purge"], ["top", "--once"]],
    ids=lambda argv: argv[0],
)  # fmt: skip
def test_a_one_shot_command_refuses_the_memory_store(tmp_path: Path, argv: list[str]) -> None:
    ran = _spool(tmp_path, *argv)
    assert ran.returncode == 2 and ran.stdout == "", ran.stdout + ran.stderr
    assert ran.stderr.startswith("spool: SPOOL_STORE_URL is memory://")
    assert "SPOOL_URL" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


def test_schedules_and_a_burst_worker_still_run_on_it(tmp_path: Path) -> None:
    assert _spool(tmp_path, "schedules").returncode == 0
    assert _spool(tmp_path, "worker", "--burst", "--quiet").returncode == 0
