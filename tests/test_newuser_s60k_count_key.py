"""`spool enqueue --count N --idempotency-key K`: one key names one job, so the N
copies were one job (the first stored, the rest answered by it) while the command
said "enqueued N jobs" and, with --json, printed the one id N times; reproduced on
SQLite locally and through `spool serve` (stop 60). Refused now, before anything is
stored or sent, with what to drop; --count alone and a key alone work as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import JobQuery
from chalicelib.storage.sqlite import SQLiteStore
from local import cli, remote_cli


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    return path


def stored_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    store = SQLiteStore(str(db), SystemClock())
    try:
        return [job.id for job in store.list_jobs(JobQuery(limit=100)).jobs]
    finally:
        store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("as_json", [False, True])
def test_copies_under_one_key_are_refused_on_the_local_store(
    db: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    argv = ["enqueue", "echo", "--count", "5", "--idempotency-key", "order-7"]
    code, out, err = run(capsys, *argv, *(["--json"] if as_json else []))
    assert code == 2, err
    assert out == ""
    assert err.startswith("spool: ") and err.count("\n") == 1, err
    assert "--count 5" in err and "--idempotency-key" in err and "one job" in err
    assert "Drop --idempotency-key" in err
    assert stored_ids(db) == []


def test_copies_under_one_key_are_refused_before_a_server_is_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("the command went to the server")

    monkeypatch.setattr(remote_cli, "run", never)
    monkeypatch.setenv("SPOOL_API_KEY", "k" * 20)
    code, out, err = run(
        capsys,
        "--url",
        "http://127.0.0.1:9",
        "enqueue",
        "echo",
        "--count",
        "3",
        "--idempotency-key",
        "order-7",
    )
    assert code == 2, err
    assert out == "" and "--count 3 with --idempotency-key" in err


def test_count_alone_and_a_key_alone_still_store(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "enqueue", "echo", "--count", "3", "--json")
    assert code == 0, err
    assert len({job["id"] for job in json.loads(out)}) == 3
    code, out, err = run(capsys, "enqueue", "echo", "--idempotency-key", "order-7", "--json")
    assert code == 0, err
    first = json.loads(out)["id"]
    code, out, err = run(
        capsys, "enqueue", "echo", "--count", "1", "--idempotency-key", "order-7", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["id"] == first and json.loads(out)["created"] is False
    assert len(stored_ids(db)) == 4
