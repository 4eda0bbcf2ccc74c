"""`spool worker` that makes a new, empty SQLite store says so, with the fix.

Found following the README's `chalice local` section (and `spool serve
--no-worker`): a `spool worker` started in another folder than the server opened
that folder's `.spool/spool.db`, which did not exist: it made a new, empty store,
printed `store sqlite:///.spool/spool.db` (the server's words too) and waited there
for ever while the server's jobs stayed `queued`. The enqueuing side is told (the
server counts no live worker: tests/test_newuser_s59d_no_worker.py); the worker,
whose terminal is the one being watched, said nothing. Now its first line says
where it made the store and how to reach the server's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.procs import guarded_env, spool_serve, stop
from tests.test_cli_errors import SPOOL

KEY = "s62d-new-store-key-0123456789"


def _env(**extra: str) -> dict[str, str]:
    """The demo handlers, and the default store (.spool/spool.db in the working
    directory) unless `extra` names one."""
    env = guarded_env(SPOOL_DEMO_HANDLERS="true")
    env.pop("SPOOL_STORE_URL", None)
    return {**env, **extra}


def _spool(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOOL), *argv],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_worker_in_another_folder_than_the_server_says_it_made_a_new_store(
    tmp_path: Path,
) -> None:
    served_in, worker_in = tmp_path / "served", tmp_path / "elsewhere"
    served_in.mkdir()
    worker_in.mkdir()
    served_store = served_in / ".spool" / "spool.db"
    served = spool_serve(  # as if started in served_in: its store is that folder's
        "--no-worker",
        env=_env(SPOOL_API_KEYS=f"{KEY}=acme", SPOOL_STORE_URL=f"sqlite:///{served_store}"),
    )
    try:
        made = _spool(worker_in, "enqueue", "echo", SPOOL_URL=served.url, SPOOL_API_KEY=KEY)
        assert made.returncode == 0, made.stderr
        done = _spool(worker_in, "worker", "--burst")
    finally:
        stop(served.proc)
    assert done.returncode == 0, done.stderr
    made_here = worker_in / ".spool" / "spool.db"
    assert made_here.exists() and served_store.exists()
    notes = [line for line in done.stderr.splitlines() if line.startswith("spool: note:")]
    assert len(notes) == 1, done.stderr
    assert f"there was no store at {made_here}" in notes[0]
    assert "made a new, empty one" in notes[0]
    assert "`chalice local`" in notes[0] and "that store's SPOOL_STORE_URL" in notes[0]
    assert "done: 0 succeeded" in done.stderr  # the server's job is not this store's


@pytest.mark.parametrize("argv", [["--burst"], ["--burst", "--quiet"]])
def test_a_worker_on_a_store_that_exists_adds_no_note(tmp_path: Path, argv: list[str]) -> None:
    first = _spool(tmp_path, "worker", *argv)
    assert first.returncode == 0, first.stderr
    assert "made a new, empty one" in first.stderr  # --quiet too: it is no banner
    again = _spool(tmp_path, "worker", *argv)
    assert again.returncode == 0, again.stderr
    assert "note:" not in again.stderr
