"""A SQLite file the machine will not let Spool write: a full disk, an I/O error, a
read-only file, a file deleted or replaced under the running process. Each is a
StoreUnavailable saying what to fix (503 with Retry-After over HTTP, a pause in the
worker), /health says so too, and nothing is half-written; once fixed, writes go on."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob
from chalicelib.runtime import Runtime
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.storage.sqlite_txn import cannot_write
from tests.apikit import Api, installed, settings_for


def _job(size: int = 10) -> NewJob:
    return NewJob(
        id=new_job_id(), type="echo", payload={"pad": "x" * size}, run_at=datetime.now(UTC)
    )


def _fill_up(db: sqlite3.Connection) -> None:
    """This connection may not grow the file by a page more: SQLite then answers
    SQLITE_FULL ("database or disk is full"), as it does when the disk is."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def _make_room(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA max_page_count = 1073741823")


def _stored(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "spool.db"))
    try:
        yield store
    finally:
        store.close()


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (13, "disk holding the SQLite database is full"),  # SQLITE_FULL
        (8, "read-only"),  # SQLITE_READONLY
        (1032, "read-only"),  # SQLITE_READONLY_DBMOVED, an extended code
        (10, "I/O error"),  # SQLITE_IOERR
        (778, "I/O error"),  # SQLITE_IOERR_WRITE
        (11, "damaged"),  # SQLITE_CORRUPT: restored by a person, like a failed disk
        (267, "damaged"),  # SQLITE_CORRUPT_VTAB, an extended code
        (26, "not a SQLite database"),  # SQLITE_NOTADB
    ],
)
def test_what_the_machine_refused_is_a_store_unavailable_saying_what_to_fix(
    code: int, says: str
) -> None:
    error = sqlite3.OperationalError("refused")
    error.sqlite_errorcode = code
    unavailable = cannot_write(error)
    assert unavailable is not None and says in unavailable.message
    assert unavailable.retry_after > 0


@pytest.mark.parametrize("code", [1, 5, 6, 19])  # error, busy, locked, constraint
def test_other_sqlite_errors_are_left_as_they_are(code: int) -> None:
    error = sqlite3.OperationalError("other")
    error.sqlite_errorcode = code
    assert cannot_write(error) is None
    assert cannot_write(ValueError("not sqlite")) is None


def test_a_full_disk_refuses_the_add_whole_then_takes_it_once_there_is_room(
    store: SQLiteStore, tmp_path: Path
) -> None:
    store.add([_job()])
    store.check_writable()
    _fill_up(store._db())
    batch = [_job(3000) for _ in range(20)]
    for attempt in ([batch[0]], batch):
        with pytest.raises(StoreUnavailable, match="full: free space on it") as caught:
            store.add(attempt)
        assert "nothing was written" in caught.value.message
        with pytest.raises(StoreUnavailable, match="full"):
            store.check_writable()  # what /health asks
    assert _stored(tmp_path / "spool.db") == 1  # no half of the batch
    assert store.get(batch[0].id) is None
    _make_room(store._db())
    assert [r.created for r in store.add(batch)] == [True] * 20
    store.check_writable()  # a write went through: healthy again
    assert _stored(tmp_path / "spool.db") == 21


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_file_deleted_or_replaced_under_the_store_takes_no_more_jobs(
    store: SQLiteStore, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "spool.db"
    kept = store.add([_job()])[0].job
    if how == "deleted":
        for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
    else:  # a backup copied over it: another file at the same path
        backup = tmp_path / "backup.db"
        shutil.copyfile(path, backup)
        os.replace(backup, path)
    with pytest.raises(StoreUnavailable, match="deleted or replaced") as caught:
        store.add([_job()])
    assert str(path) in caught.value.message and "restart" in caught.value.message
    with pytest.raises(StoreUnavailable, match="deleted or replaced"):
        store.check_writable()
    assert store.get(kept.id) is not None  # what it holds can still be read
    with pytest.raises(StoreUnavailable):
        store.claim(10, 30)  # a worker pauses instead of running jobs it cannot finish
    reopened = SQLiteStore(str(path))  # a restart opens whatever is at the path now
    try:
        reopened.add([_job()])
        reopened.check_writable()
    finally:
        reopened.close()


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, extra={"SPOOL_HEALTH_CACHE_SECONDS": "0"})
    with installed(settings) as runtime:
        yield runtime


def test_over_http_a_full_disk_is_a_503_with_retry_after_and_health_says_so(
    api: Api, rt: Runtime
) -> None:
    store = rt.store
    assert isinstance(store, SQLiteStore)
    assert api.post("/enqueue", {"type": "echo", "payload": {}}).status == 201
    _fill_up(store._db())
    reply = api.post("/enqueue", {"type": "echo", "payload": {"pad": "x" * 5000}})
    assert reply.status == 503 and reply.error_code == "store_unavailable"
    assert "full" in reply.json["error"]["message"]
    assert int(reply.header("Retry-After") or 0) > 0
    batch = {"jobs": [{"type": "echo", "payload": {"pad": "x" * 3000}}] * 10}
    assert api.post("/enqueue", batch).status == 503
    health = api.get("/health")
    assert health.status == 503 and "full" in health.json["error"]["message"]
    _make_room(store._db())
    assert api.post("/enqueue", batch).status == 201
    assert api.get("/health").status == 200
    assert len(api.get("/jobs?limit=100").json["jobs"]) == 11


def test_health_says_a_full_disk_before_any_write_fails(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health knew of a full disk only from a write this process had had refused in
    the last 10 s: a process that had written nothing answered 200 (and under
    --processes N, 200 and 503 in turn). It now looks at the free space itself."""

    real = os.statvfs
    free = {"bytes": 10 << 30}

    class Fs:
        def __init__(self, path: str) -> None:
            self.f_frsize = real(path).f_frsize
            self.f_bavail = free["bytes"] // self.f_frsize

    monkeypatch.setattr("chalicelib.storage.sqlite_txn.os.statvfs", Fs)
    assert api.get("/health").status == 200
    free["bytes"] = 64 << 10  # 64 KiB left: SQLite's next checkpoint or WAL frame fails
    health = api.get("/health")
    assert health.status == 503 and "full" in health.json["error"]["message"]
    assert int(health.header("Retry-After") or 0) > 0
    free["bytes"] = 10 << 30
    assert api.get("/health").status == 200


def test_a_file_this_process_may_not_write_is_a_store_that_is_down(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chmod 0400 file still answered reads, so `spool serve --processes N` took a
    server process that could not start on it for a broken one, and after four tries
    stopped every process. os.access stands in for the mode: root may write anyway."""
    from local.serve import store_down

    assert not store_down(rt)
    real = os.access
    monkeypatch.setattr(
        "chalicelib.storage.sqlite_txn.os.access", lambda p, mode: mode != os.W_OK and real(p, mode)
    )
    assert store_down(rt)
    health = api.get("/health")
    assert health.status == 503 and "read-only" in health.json["error"]["message"]


# A child that may write files of at most LIMIT bytes adds jobs until one is refused
# and prints what it was told. Past the limit, write() fails with EFBIG (Python
# ignores SIGXFSZ) and SQLite reports SQLITE_IOERR_WRITE, as for a failing disk.
FSIZE_CHILD = """
import resource, sys
from datetime import UTC, datetime
from chalicelib.errors import StoreUnavailable
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob
from chalicelib.storage.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
for _ in range(10_000):
    job = NewJob(id=new_job_id(), type="echo", payload={"pad": "x" * 4000},
                 run_at=datetime.now(UTC))
    try:
        store.add([job])
    except StoreUnavailable as exc:
        print(exc.message)
        break
"""


def test_a_write_past_the_process_file_size_limit_names_that_limit(tmp_path: Path) -> None:
    """`ulimit -f` on a worker (helper E's chaos run, stop 41): the refusal said only
    "the disk ... reported an I/O error", sending the operator to a disk that is fine."""
    import subprocess
    import sys

    from tests.procs import ROOT, guarded_env

    limit = 1 << 20
    child = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(tmp_path / "spool.db"), str(limit)],
        cwd=ROOT,
        env=guarded_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    said = child.stdout.strip()
    assert said.startswith("the disk holding the SQLite database reported an I/O error"), said
    assert f"file-size limit ({limit} bytes, ulimit -f)" in said
    assert said.endswith("nothing was written")


# A child whose files may grow to LIMIT bytes adds COUNT small jobs one at a time, each
# retried while refused (for up to BOUND seconds, as a client retries a 503), and
# prints how many it stored. The limit binds the WAL first: the jobs themselves take
# a small part of it.
WAL_FULL_CHILD = """
import resource, sys, time
from datetime import UTC, datetime
from chalicelib.errors import StoreUnavailable
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob
from chalicelib.storage.sqlite import SQLiteStore

path, limit, count, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = SQLiteStore(path)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
stored = refused = 0
for _ in range(count):
    before = stored
    job = NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=datetime.now(UTC))
    give_up = time.monotonic() + bound
    while True:
        try:
            store.add([job])
        except StoreUnavailable:
            refused += 1
            if time.monotonic() > give_up:
                break
            time.sleep(0.01)
        else:
            stored += 1
            break
    if stored == before:  # refused for the whole bound: the rest would be too
        break
print(stored, refused)
"""


def test_a_wal_that_meets_a_full_disk_is_checkpointed_and_its_space_used_again(
    tmp_path: Path,
) -> None:
    """Helper F's chaos run (stop 43), a store on a small tmpfs: the WAL grew toward its
    10,000-page checkpoint mark until the disk was full, and from then on every write
    was refused, for good: a checkpoint ran only after a commit that succeeded, and
    none did, though copying the WAL's few pages back would have let SQLite write the
    WAL again from its start. 300 jobs need far less than the WAL's 2 MB; every one is
    stored once the refusal has set off a checkpoint."""
    import subprocess
    import sys

    from tests.procs import ROOT, guarded_env

    path = tmp_path / "spool.db"
    count = 300
    child = subprocess.run(
        [sys.executable, "-c", WAL_FULL_CHILD, str(path), str(2 << 20), str(count), "20"],
        cwd=ROOT,
        env=guarded_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr
    stored, refused = map(int, child.stdout.split())
    assert refused > 0  # the limit was met: the test tested something
    assert stored == count, f"stored {stored} of {count}, then refused for good"
    assert _stored(path) == count
