"""The SQLite store's files hold payloads (headers, tokens): only their owner may
read them, whatever the umask, without touching folders the user chose."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage import open_store
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Permissive umasks too: the modes must not depend on it."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "spool.db"
    store = SQLiteStore(str(db), FakeClock())
    try:
        store.add([new_job(FakeClock(), payload={"token": "s3cret"})])  # the WAL is written
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        store.close()


def test_folders_spool_creates_are_0700(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "made" / "by" / "spool" / "spool.db"
    store = open_store(f"sqlite:///{db}")
    try:
        for folder in (tmp_path / "made", tmp_path / "made" / "by", db.parent):
            assert mode(folder) == 0o700, folder
        assert mode(db) == 0o600
        assert mode(Path(f"{db}.wake")) == 0o700  # the workers' wake-up sockets
    finally:
        store.close()


def test_an_existing_folder_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: the user chose it, Spool must not chmod it
    store = SQLiteStore(str(shared / "spool.db"))
    try:
        assert mode(shared) == 0o1777
        assert mode(shared / "spool.db") == 0o600
    finally:
        store.close()


def test_an_existing_database_is_opened_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    SQLiteStore(str(db)).close()
    db.chmod(0o640)  # the owner's choice (a group that backs it up, say)
    store = SQLiteStore(str(db))
    try:
        assert mode(db) == 0o640
        assert store.counts() == {}
    finally:
        store.close()
