"""The write gate's files (`<db>.writer`, `<db>.waiting`, chalicelib/storage/
sqlite_gate.py) removed while Spool runs (by hand, `rm spool.db.*` meant for an
old copy, a cleaner of old files).

Each process opened them once and kept the descriptors: a process started after
the removal (a `spool worker`, a server process `--processes N` restarted, another
`spool serve`) made new files and took its turns on them, the running ones on the
old, gone ones, so two writers held "the" gate at once and met in SQLite's busy
handler again, the sleeps of up to 100 ms the gate exists to avoid. Now a process
that finds the file at the path is not the one it holds (it looks once a second at
most) opens it again, so every process takes its turn on the same file. Another
real process holds the gate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from chalicelib.storage import sqlite_gate
from chalicelib.storage.sqlite_gate import GateTimeout, WriteGate
from tests.test_sqlite_gate import Holder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")


@pytest.fixture(autouse=True)
def look_at_every_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process looks at the files once a second at most (LOOK_EVERY); here at each."""
    monkeypatch.setattr(sqlite_gate, "LOOK_EVERY", 0.0)


@pytest.mark.parametrize("removed", [".writer", ".writer+.waiting"])
def test_a_running_process_takes_its_turn_on_the_file_made_after_a_removal(
    tmp_path: Path, removed: str
) -> None:
    db = str(tmp_path / "spool.db")
    gate = WriteGate(db)
    gate.acquire(patience=1.0)  # the descriptors are open from here
    gate.release()
    for suffix in removed.split("+"):
        os.unlink(db + suffix)
    newcomer = Holder(db + ".writer")  # a process started since: the new file, held
    try:
        with pytest.raises(GateTimeout):
            gate.acquire(patience=0.3)  # was: taken at once, on the gone file
        newcomer.release()
        gate.acquire(patience=5.0)
        gate.release()
    finally:
        newcomer.stop()
        gate.close()


def test_a_gate_file_not_yet_made_again_is_made_by_the_first_writer(tmp_path: Path) -> None:
    db = str(tmp_path / "spool.db")
    gate = WriteGate(db)
    gate.acquire(patience=1.0)
    gate.release()
    os.unlink(db + ".writer")
    gate.acquire(patience=1.0)
    try:
        assert os.path.exists(db + ".writer")
        assert os.stat(db + ".writer").st_ino == os.fstat(gate._gate).st_ino
    finally:
        gate.release()
        gate.close()
