"""The SQLite `-wal` (or `-shm`) file deleted or replaced under a running store.

SQLite goes on committing into the write-ahead log it still holds open: no other
process can open the database meanwhile ("disk I/O error"), and a worker logged 2000
"job succeeded" while the file then held none of them. Now the next write is refused
as for a deleted database file (StoreUnavailable naming the -wal, "restart Spool"),
/health says so, a worker holds the outcome it cannot write (outcome_unwritten)
instead of reporting it succeeded, and what was acknowledged before the delete
reaches the database file when the store is closed (a normal stop): failed
checkpoint connections no longer stay open, whose locks kept the last close from
copying the old log into the file.

Files are removed with os.unlink between two store calls, never by timing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.ids import new_job_id
from chalicelib.job_events import JobEvents
from chalicelib.models import Completion, JobState, NewJob
from chalicelib.runtime import Runtime
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.worker import Worker, WorkerConfig
from tests.apikit import Api, installed, settings_for
from tests.factories import token


def _job() -> NewJob:
    return NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=datetime.now(UTC))


def _on_disk(path: Path) -> dict[str, str]:
    """id -> state of the jobs the database file itself holds: a copy of it alone,
    read without any -wal or -shm."""
    copy = path.parent / "copy-of-file.db"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    try:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())
    finally:
        db.close()
        for name in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            name.unlink(missing_ok=True)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(path))
    try:
        yield opened
    finally:
        opened.close()


def _take(path: Path, suffix: str, how: str) -> None:
    companion = Path(f"{path}{suffix}")
    if how == "deleted":
        os.unlink(companion)
    else:  # another file put in its place (a copy, as a restore would)
        spare = path.parent / "spare"
        shutil.copyfile(companion, spare)
        os.replace(spare, companion)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_wal_taken_away_refuses_the_next_write_and_keeps_what_was_acknowledged(
    store: SQLiteStore, path: Path, how: str
) -> None:
    wal = Path(f"{path}-wal")
    kept = [r.job.id for r in store.add([_job() for _ in range(5)])]
    # A checkpoint truncates the -wal (same file, size 0): not a change of file.
    store._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert wal.exists() and wal.stat().st_size == 0
    kept.append(store.add([_job()])[0].job.id)  # still written: the log is the same file
    _take(path, "-wal", how)
    refused = _job()
    with pytest.raises(StoreUnavailable) as caught:
        store.add([refused])  # was written into the deleted log, and acknowledged
    message = caught.value.message
    assert f"{path}-wal" in message and "deleted or replaced" in message
    assert "restart Spool" in message and "nothing was written" in message
    assert caught.value.retry_after > 0
    with pytest.raises(StoreUnavailable, match="write-ahead log"):
        store.add([_job(), _job()])  # a batch too
    with pytest.raises(StoreUnavailable, match="write-ahead log"):
        store.claim(10, 30)  # a worker pauses instead of running jobs it cannot finish
    with pytest.raises(StoreUnavailable, match="write-ahead log"):
        store.check_writable()  # what /health asks
    assert store.get(kept[0]) is not None  # reads still answer
    store.close()  # a normal stop copies the old log into the file
    # Every acknowledged job is in the database file itself; the refused one is nowhere.
    assert _on_disk(path) == dict.fromkeys(kept, "queued")
    reopened = SQLiteStore(str(path))  # the restart the message asks for
    try:
        assert reopened.get(refused.id) is None
        assert all(reopened.get(job_id) is not None for job_id in kept)
        reopened.add([_job()])
        reopened.check_writable()
    finally:
        reopened.close()


def test_a_shm_taken_away_refuses_the_next_write(store: SQLiteStore, path: Path) -> None:
    store.add([_job()])
    _take(path, "-shm", "deleted")
    with pytest.raises(StoreUnavailable, match="shm was deleted or replaced") as caught:
        store.add([_job()])
    assert "restart Spool" in caught.value.message


def test_finishes_into_a_deleted_wal_are_refused_not_reported_applied(
    store: SQLiteStore, path: Path
) -> None:
    jobs = store.add([_job() for _ in range(3)])
    claimed = store.claim(3, 30)
    assert len(claimed) == 3
    os.unlink(f"{path}-wal")
    done = [
        Completion(
            job_id=job.id,
            lease_token=token(job),
            state=JobState.SUCCEEDED,
            result={"ok": True},
        )
        for job in claimed
    ]
    with pytest.raises(StoreUnavailable, match="write-ahead log"):
        store.finish(done)  # was [True, True, True], then lost
    store.close()
    # The claims (committed before the delete) are in the file; no success is.
    assert _on_disk(path) == {r.job.id: "running" for r in jobs}


def test_a_worker_holds_outcomes_it_cannot_write_to_a_deleted_wal(
    store: SQLiteStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry()
    ran: list[str] = []

    @reg.handler("echo", timeout=5)
    def echo(payload: dict[str, Any]) -> str:
        if not ran:
            os.unlink(f"{path}-wal")  # between the claim and the finish
        ran.append("x")
        return "ok"

    job = store.add([_job()])[0].job
    config = WorkerConfig(concurrency=1, lease_seconds=0.5)
    worker = Worker(store, reg, config, middleware=[JobEvents()])
    outcome: list[object] = []

    def drain() -> None:
        try:
            outcome.append(worker.drain())
        except StoreUnavailable as exc:  # its next claim: refused as well
            outcome.append(exc)

    try:
        with caplog.at_level(logging.INFO, logger="spool"):
            thread = threading.Thread(target=drain, daemon=True)
            thread.start()
            thread.join(30)
            assert not thread.is_alive()
    finally:
        worker.close()
        store.close()
    assert ran == ["x"]
    stats = worker.stats
    assert (stats.succeeded, stats.unwritten) == (0, 1)  # was (1, 0): "job succeeded"
    events = [getattr(r, "event", "") for r in caplog.records if getattr(r, "job_id", "") == job.id]
    assert "outcome_unwritten" in events and "succeeded" not in events
    assert _on_disk(path) == {job.id: "running"}  # comes back once its lease expires


def test_failed_checkpoints_leave_no_descriptors_open(store: SQLiteStore, path: Path) -> None:
    store.add([_job()])
    checkpointer = store._checkpointer
    assert checkpointer is not None
    os.unlink(f"{path}-wal")
    checkpointer.run_now()  # the first may park a descriptor SQLite reuses (its lock)
    before = _fds()
    for _ in range(50):
        checkpointer.run_now()  # each opened a connection that was never closed
    assert _fds() == before
    assert not os.path.exists(f"{path}-wal")  # and none made a new, empty log there


def test_a_connection_whose_pragmas_fail_is_closed(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails after sqlite3.connect (here: the journal-mode switch) closes the
    connection it opened; the checkpoint thread retries after every commit."""
    import chalicelib.storage.sqlite as sqlite_module

    real_settle = sqlite_module._settle

    def failing(db: sqlite3.Connection, pragma: str, patience: float = 10.0) -> None:
        if "journal_mode" in pragma:
            raise sqlite3.OperationalError("disk I/O error")
        real_settle(db, pragma, patience)

    monkeypatch.setattr(sqlite_module, "_settle", failing)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    checkpointer.run_now()
    before = _fds()
    for _ in range(50):
        checkpointer.run_now()
    assert _fds() == before


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, extra={"SPOOL_HEALTH_CACHE_SECONDS": "0"})
    with installed(settings) as runtime:
        yield runtime


def test_over_http_a_deleted_wal_is_a_503_and_health_says_so(
    api: Api, rt: Runtime, tmp_path: Path
) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {}})
    assert api.get("/health").status == 200
    os.unlink(tmp_path / "spool.db-wal")
    reply = api.post("/enqueue", {"type": "echo", "payload": {}})
    assert reply.status == 503 and reply.error_code == "store_unavailable"
    assert "spool.db-wal was deleted or replaced" in reply.json["error"]["message"]
    assert int(reply.header("Retry-After") or 0) > 0
    health = api.get("/health")
    assert health.status == 503 and "write-ahead log" in health.json["error"]["message"]
    assert api.get(f"/status/{job_id}").status == 200  # this thread still reads
