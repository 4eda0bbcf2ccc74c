"""A SQLite file named through a symbolic link keeps every guard of its real path.

Found by a chaos run (s58, helper D): `.spool/spool.db` a link to `/data/spool.db`
(a data disk, a volume), `spool serve` started on the link. SQLite follows the
link and keeps its `-wal` and `-shm` beside the file it opened, but Spool put its
own companions beside the link and looked for SQLite's there:

- the `-wal` deleted under the server was never seen (no `<link>-wal` to watch):
  every POST /enqueue after it answered 201, into a log no other process could
  read, and the jobs were gone once the server was killed;
- the checkpoint thread read the WAL's length from a `<link>-shm` that never
  exists, so it never checkpointed: the WAL grew past every mark;
- the write gate (`.writer`, `.waiting`) and the wake-up folder (`.wake`) were
  made beside the link: a `spool worker` on `/data/spool.db` and the server on the
  link took turns in SQLite's slower busy handler and never woke each other, so
  every job waited for the worker's idle poll (0.57 s a job against 6 ms);
- the free space /health and every write look at was the link's file system's.

Now a store keeps all of them beside the file the link names, as SQLite does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob
from chalicelib.storage import sqlite_checkpoint
from chalicelib.storage.sqlite import SQLiteStore
from tests import factories


def _job() -> NewJob:
    return NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=datetime.now(UTC))


@pytest.fixture
def real(tmp_path: Path) -> Path:
    """The database file, made by a store opened on its own path (as a worker there)."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "spool.db"
    SQLiteStore(str(path)).close()
    return path


@pytest.fixture
def link(tmp_path: Path, real: Path) -> Path:
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "spool.db"
    path.symlink_to(real)
    return path


@pytest.fixture
def linked(link: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(link))
    try:
        yield store
    finally:
        store.close()


def test_nothing_is_made_beside_the_link(linked: SQLiteStore, link: Path, real: Path) -> None:
    linked.add([_job()])
    linked.notifier.wait(0)  # a waiter's socket, as a worker's
    assert sorted(p.name for p in link.parent.iterdir()) == ["spool.db"]
    beside = {p.name for p in real.parent.iterdir()}
    assert {"spool.db-wal", "spool.db-shm", "spool.db.writer", "spool.db.wake"} <= beside


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_companion_taken_away_under_the_link_refuses_the_next_write(
    linked: SQLiteStore, real: Path, suffix: str
) -> None:
    linked.add([_job()])
    os.unlink(f"{real}{suffix}")
    with pytest.raises(StoreUnavailable, match="deleted or replaced") as caught:
        linked.add([_job()])  # was acknowledged into a log no one else could read
    assert f"{real}{suffix}" in caught.value.message
    with pytest.raises(StoreUnavailable, match="deleted or replaced"):
        linked.check_writable()  # what /health asks


def test_a_waiter_on_the_real_path_is_woken_by_an_add_through_the_link(
    linked: SQLiteStore, real: Path
) -> None:
    worker_side = SQLiteStore(str(real))
    try:
        assert not worker_side.notifier.wait(0)  # its socket is bound, nothing sent yet
        linked.add([_job()])
        # The datagram is sent before add returns: no time needs to pass.
        assert worker_side.notifier.wait(0)
    finally:
        worker_side.close()


def test_the_link_and_the_real_path_share_one_turn_to_write(
    linked: SQLiteStore, real: Path
) -> None:
    worker_side = SQLiteStore(str(real))
    try:
        assert worker_side._gate is not None and linked._gate is not None
        assert worker_side._gate.paths == linked._gate.paths
    finally:
        worker_side.close()


def test_the_wal_is_checkpointed_through_the_link(
    link: Path, real: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = 200  # pages: CHECKPOINT_PAGES here (the real one is 10,000)
    monkeypatch.setattr(sqlite_checkpoint, "CHECKPOINT_PAGES", mark)
    store = SQLiteStore(str(link), FakeClock())
    try:
        page = store._db().execute("PRAGMA page_size").fetchone()[0]
        limit = 32 + 3 * mark * (page + 24)  # the header, then three marks of frames
        clock = FakeClock()
        for _ in range(400):  # about 8 marks of frames written
            store.add([factories.new_job(clock) for _ in range(20)])
            size = os.path.getsize(f"{real}-wal")
            assert size < limit, f"the WAL reached {size / limit * 3:.1f} marks"
    finally:
        store.close()


def test_the_free_space_looked_at_is_the_real_files(
    linked: SQLiteStore, real: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[str] = []
    statvfs = os.statvfs

    def watched(path: str) -> os.statvfs_result:
        looked.append(os.path.abspath(path))
        return statvfs(path)

    monkeypatch.setattr("chalicelib.storage.sqlite_txn.os.statvfs", watched)
    linked.check_writable()
    assert looked == [str(real.parent)]
