"""What a black-box chaos run of `spool serve` on SQLite found, each pinned down.

A file deleted, moved or replaced under the running store: no thread makes a new
database at the path, a read that cannot reach the file is a 503 (StoreUnavailable)
and never an internal error, and /health says so. A writer stalled holding the turn
(another process SIGSTOPped at the gate, or a thread of this one): every writer
queued behind it gives up within the gate's patience, not one patience after another.

Threads stand in for HTTP threads; events, not sleeps, decide who holds what when.
Times are only bounded, generously.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.ids import new_job_id
from chalicelib.models import JobQuery, NewJob
from chalicelib.runtime import Runtime
from chalicelib.storage import sqlite_gate
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.storage.sqlite_gate import WriteGate
from chalicelib.storage.sqlite_txn import FileWatch, cannot_read
from tests.apikit import Api, installed, settings_for

T = TypeVar("T")
PATIENCE = 1.0  # the gate's, shortened for these tests
MARGIN = 2.5  # past it, for a loaded machine: the old code took one PATIENCE per writer
WRITERS = 8


def _job() -> NewJob:
    return NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=datetime.now(UTC))


def _on_new_thread(call: Callable[[], T]) -> T | BaseException:
    """What call returns (or raises) on a thread that has no connection yet."""
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and len(outcome) == 1
    return outcome[0]


def _take_away(folder: Path, how: str) -> None:
    """rm spool.db*, mv spool.db elsewhere, or copy a backup over it."""
    path = folder / "spool.db"
    if how == "deleted":
        for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
            (folder / name).unlink(missing_ok=True)
    elif how == "moved":
        os.rename(path, folder / "moved.db")
    else:
        backup = folder / "backup.db"
        shutil.copyfile(path, backup)
        os.replace(backup, path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "spool.db"))
    try:
        yield opened
    finally:
        opened.close()


# -- 1. the file deleted, moved or replaced under the running store -----------


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_no_thread_makes_a_new_database_where_the_file_was(
    store: SQLiteStore, tmp_path: Path, how: str
) -> None:
    kept = store.add([_job()])[0].job
    _take_away(tmp_path, how)
    read = _on_new_thread(lambda: store.get(kept.id))
    assert isinstance(read, StoreUnavailable), read  # was "no such table: jobs", a 500
    assert "deleted or replaced" in read.message and read.retry_after > 0
    wrote = _on_new_thread(lambda: store.add([_job()]))
    assert isinstance(wrote, StoreUnavailable) and "deleted or replaced" in wrote.message
    assert not (tmp_path / "spool.db").exists()  # was a new empty 2048-byte database
    with pytest.raises(StoreUnavailable, match="deleted or replaced"):
        store.check_writable()
    assert store.get(kept.id) is not None  # a connection open to the old file still reads


def test_no_connection_touches_a_file_copied_over_the_one_the_store_opened(
    store: SQLiteStore, tmp_path: Path
) -> None:
    kept = store.add([_job()])[0].job
    _take_away(tmp_path, "replaced")
    path = tmp_path / "spool.db"
    restored = path.read_bytes()
    with pytest.raises(StoreUnavailable):  # refused on this thread already, by the stat
        store.add([_job()])
    read = _on_new_thread(lambda: store.list_jobs(JobQuery(limit=10)))
    assert isinstance(read, StoreUnavailable), read  # was the backup's jobs on this thread
    assert "deleted or replaced" in read.message
    assert store._checkpointer is not None
    store._checkpointer.run_now()  # logs that it could not connect, raises nothing
    # Opened and closed, a connection took the old file's -wal for the backup's own and
    # copied it into the backup, then deleted it under the connections still open.
    assert path.read_bytes() == restored
    assert (tmp_path / "spool.db-wal").exists()
    assert store.get(kept.id) is not None
    with pytest.raises(StoreUnavailable, match="deleted or replaced"):
        store.check_writable()


class _Refusing:
    """A connection whose every statement fails as SQLite would with this code."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            error = sqlite3.OperationalError(self.message)
            error.sqlite_errorcode = self.code
            raise error

        return refuse


READS: dict[str, Callable[[SQLiteStore], object]] = {
    "get": lambda s: s.get("j_x"),
    "list_jobs": lambda s: s.list_jobs(JobQuery(limit=5)),
    "counts": lambda s: s.counts(),
    "counters": lambda s: s.counters(),
    "next_due_at": lambda s: s.next_due_at(),
    "cache_epoch": lambda s: s.cache_epoch("t"),
    "attempts": lambda s: s.attempts("j_x"),
    "state_counts": lambda s: s.state_counts(),
    "throughput": lambda s: s.throughput(datetime.now(UTC)),
    "get_by_key": lambda s: s.get_by_key("t", "k"),
    "oldest_due": lambda s: s.oldest_due(),
    "oldest_due_tenant": lambda s: s.oldest_due(tenant="t"),
    "live_workers": lambda s: s.live_workers(60),
    "webhooks": lambda s: s.webhooks("j_x"),
    "webhook_counts": lambda s: s.webhook_counts(),
}


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_the_file_refuses_is_a_store_unavailable(store: SQLiteStore, read: str) -> None:
    own = store._db()
    try:
        store._local.db = _Refusing(10, "disk I/O error")  # SQLITE_IOERR
        with pytest.raises(StoreUnavailable, match="I/O error") as caught:
            READS[read](store)
        assert caught.value.retry_after > 0
        store._local.db = _Refusing(1, "no such column: nope")  # a bug stays a bug
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            READS[read](store)
    finally:
        store._local.db = own


def test_any_error_on_a_file_gone_from_its_path_is_a_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"")
    watch = FileWatch(str(path))
    bug = sqlite3.OperationalError("no such table: jobs")
    bug.sqlite_errorcode = 1
    assert cannot_read(bug, watch) is None  # the file is there: a bug
    path.unlink()
    gone = cannot_read(bug, watch)  # an empty file made at the path says this
    assert gone is not None and "deleted or replaced" in gone.message
    refused = sqlite3.OperationalError("unable to open database file")
    refused.sqlite_errorcode = 14  # SQLITE_CANTOPEN
    unopened = cannot_read(refused, None)
    assert unopened is not None and "cannot be opened" in unopened.message
    assert cannot_read(ValueError("not sqlite"), watch) is None


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, extra={"SPOOL_HEALTH_CACHE_SECONDS": "0"})
    with installed(settings) as runtime:
        yield runtime


@pytest.mark.parametrize("how", ["deleted", "moved", "replaced"])
def test_over_http_nothing_is_a_500_once_the_file_is_gone(
    api: Api, rt: Runtime, tmp_path: Path, how: str
) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {}})
    assert api.get(f"/status/{job_id}").status == 200
    _take_away(tmp_path, how)
    for reply in (
        api.get("/health"),
        _on_new_thread(lambda: api.get("/health")),  # was 500 internal_error
    ):
        assert not isinstance(reply, BaseException), reply
        assert reply.status == 503 and reply.error_code == "store_unavailable"
        assert "deleted or replaced" in reply.json["error"]["message"]
        assert int(reply.header("Retry-After") or 0) > 0
    fresh = _on_new_thread(lambda: api.get(f"/status/{job_id}"))  # was 500 on some threads
    assert not isinstance(fresh, BaseException), fresh
    assert fresh.status == 503 and int(fresh.header("Retry-After") or 0) > 0
    assert api.get(f"/status/{job_id}").status == 200  # this thread's connection still reads
    if how != "replaced":
        assert not (tmp_path / "spool.db").exists()


# -- 2. a writer stalled holding the turn ------------------------------------


def _writers_behind(store: SQLiteStore, n: int) -> list[tuple[float, object]]:
    """n threads add a job at once; each one's (seconds waited, job id or error)."""
    start = threading.Barrier(n)
    outcomes: list[tuple[float, object]] = []
    lock = threading.Lock()

    def write() -> None:
        start.wait(30)
        began = time.monotonic()
        try:
            outcome: object = store.add([_job()])[0].job.id
        except Exception as exc:  # reported to the test
            outcome = exc
        with lock:
            outcomes.append((time.monotonic() - began, outcome))

    threads = [threading.Thread(target=write, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    # Before the fix the last answered after n patiences, or never behind a thread.
    deadline = time.monotonic() + PATIENCE * n + 10
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    with lock:
        return list(outcomes)


def _all_gave_up_in_time(outcomes: list[tuple[float, object]]) -> None:
    assert len(outcomes) == WRITERS, "writers still waiting"
    for waited, outcome in outcomes:
        assert isinstance(outcome, StoreUnavailable) and "locked" in outcome.message, outcome
        assert outcome.retry_after > 0
        assert waited < PATIENCE + MARGIN, f"waited {waited:.1f} s for its 503"


def test_writers_behind_a_process_stalled_at_the_gate_all_give_up_within_the_patience(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_gate, "PATIENCE", PATIENCE)
    # Its own descriptor: flock counts it as another process, as a SIGSTOPped one.
    stalled = WriteGate(str(tmp_path / "spool.db"))
    stalled.acquire()
    try:
        _all_gave_up_in_time(_writers_behind(store, WRITERS))
        assert store.list_jobs(JobQuery(limit=10)).jobs == []  # nothing half-written
    finally:
        stalled.release()
        stalled.close()
    assert store.add([_job()])[0].created  # the turn is free again: writes go on


def test_writers_behind_a_thread_stalled_in_its_transaction_give_up_within_the_patience(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_gate, "PATIENCE", PATIENCE)
    holding, let_go = threading.Event(), threading.Event()

    def stall() -> None:
        with store._write():
            holding.set()
            let_go.wait(60)

    holder = threading.Thread(target=stall, daemon=True)
    holder.start()
    assert holding.wait(30)
    try:
        _all_gave_up_in_time(_writers_behind(store, WRITERS))
    finally:
        let_go.set()
        holder.join(30)
    assert store.add([_job()])[0].created


# -- 3. a damaged file -------------------------------------------------------


def _damage(path: Path) -> None:
    """Overwrite the middle third of the file's pages (its header and schema, at the
    start, stay whole) as a failing disk or a torn copy would; the same bytes every run."""
    check = sqlite3.connect(path)
    check.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    size, pages = (
        check.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count")
    )
    check.close()
    noise = random.Random(7).randbytes(size * (pages // 3))
    with open(path, "r+b") as file:
        file.seek(size * (pages // 3))
        file.write(noise)


def test_a_damaged_file_is_a_503_that_says_so_never_a_500(tmp_path: Path) -> None:
    """Was 500 internal_error for the reads that met a damaged page (and the worker
    exited with an unexpected error): SQLITE_CORRUPT is an outage like a failing disk."""
    from chalice.test import Client

    import app as spool_app

    settings = settings_for(tmp_path)
    with installed(settings), Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        pad = "p" * 300
        ids = [api.enqueue({"type": "echo", "payload": {"n": i, "pad": pad}}) for i in range(300)]
    _damage(tmp_path / "spool.db")
    with installed(settings), Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        answers = [api.get(f"/status/{job_id}") for job_id in ids]
        answers.append(api.get("/jobs?limit=200"))
        statuses = {reply.status for reply in answers}
        assert 500 not in statuses and 503 in statuses, statuses
        for reply in answers:
            if reply.status == 503:
                assert reply.error_code == "store_unavailable"
                assert "damaged" in reply.json["error"]["message"]
                assert int(reply.header("Retry-After") or 0) > 0


def test_a_write_to_a_damaged_file_is_a_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    store = SQLiteStore(str(path))
    for _ in range(4):
        store.add([_job() for _ in range(200)])
    store.close()
    _damage(path)
    store = SQLiteStore(str(path))
    try:
        with pytest.raises(StoreUnavailable, match="damaged") as caught:
            for _ in range(50):
                store.add([_job() for _ in range(50)])
                store.claim(50, 30.0)
        assert caught.value.retry_after > 0
    finally:
        store.close()


@pytest.mark.parametrize("taken", ["spool.db", "spool.db-wal"])
def test_a_503_names_the_file_taken_away_but_not_its_path_on_the_server(
    api: Api, rt: Runtime, tmp_path: Path, taken: str, caplog: pytest.LogCaptureFixture
) -> None:
    """/health, which anyone may ask without a key, answered "the SQLite database file
    /srv/spool/.spool/spool.db was deleted or replaced": where the server keeps its
    files. The client reads which file and what to do; the path goes to the log."""
    api.enqueue({"type": "echo", "payload": {}})
    os.unlink(tmp_path / taken)
    with caplog.at_level(logging.WARNING, logger="spool.api"):
        replies = [api.get("/health", key=None), api.post("/enqueue", {"type": "echo"})]
    for reply in replies:
        assert reply.status == 503 and reply.error_code == "store_unavailable", reply.body
        message = reply.json["error"]["message"]
        assert f"file {taken} was deleted or replaced" in message
        assert str(tmp_path) not in reply.body.decode()
    assert f"{tmp_path / taken} was deleted or replaced" in caplog.text
