"""`spool serve --processes N` refuses a store its processes cannot share.

On `memory://` each server process had a store of its own: a job enqueued through
one answered 404 from another (one status call in six, in a run by hand), and the emulated
worker, in the supervisor, saw none of them. It served anyway, with no word.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.procs import guarded_env


def _serve(tmp_path: Path, store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", *args],
        cwd=tmp_path,
        env=guarded_env(SPOOL_STORE_URL=store_url, SPOOL_API_KEYS="k-0123456789abcdef=t"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_several_processes_on_a_memory_store_are_refused(tmp_path: Path) -> None:
    ran = _serve(tmp_path, "memory://", "--processes", "2")
    assert ran.returncode == 2 and ran.stdout == ""  # before any banner or process
    assert ran.stderr.startswith("spool: --processes 2 needs a store the processes share")
    assert "memory://" in ran.stderr and "sqlite:///" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
