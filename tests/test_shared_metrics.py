"""local/shared_metrics.py: the files `spool serve --processes N` shares metrics by."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from local import shared_metrics


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_supervisor_s_directory_is_swept_at_the_next_start(tmp_root: Path) -> None:
    """kill -9 leaves the directory behind (nothing runs to remove it): the next
    supervisor removes those whose owner is gone, and only those."""
    orphan = tmp_root / f"{shared_metrics.PREFIX}orphan"
    orphan.mkdir()
    (orphan / shared_metrics.OWNER).write_text(str(_dead_pid()))
    (orphan / "worker.prom").write_text("")
    living = tmp_root / f"{shared_metrics.PREFIX}living"
    living.mkdir()
    (living / shared_metrics.OWNER).write_text(str(os.getpid()))
    unowned = tmp_root / f"{shared_metrics.PREFIX}unowned"  # not (yet) marked: left alone
    unowned.mkdir()

    shared_metrics.sweep_orphans()

    assert not orphan.exists()
    assert living.exists() and unowned.exists()
