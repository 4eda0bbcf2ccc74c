"""Postgres ends Spool's sessions from its side: the log says why, as the server did.

`pg_terminate_backend`, `pg_ctl stop -m fast` and a postmaster gone each end a session
with a FATAL message first ("terminating connection due to administrator command").
Read while the connection was idle (the worker's LISTEN connection between wake-ups,
a pipelined transaction between its results) libpq hands that message to the notice
handler and raises its own "server closed the connection unexpectedly ... This
probably means the server terminated abnormally": every such end was logged as a
server crash, sending operators to the server's log for a crash that never happened.

- a real `spool worker` whose LISTEN connection is terminated, three times: each
  line names the administrator's command, the worker listens again each time (a new
  LISTEN session) and runs the job enqueued after it, once;
- a pipelined write whose session is terminated between its statements: the line
  names the administrator's command; the call is still a write that may have applied.

Stop 62, helper H. Reproduced with `spool serve` and two `spool worker`s on the shared
server under pg_terminate_backend of every session of the database at random moments
of a drain (5,412 acknowledged jobs, 42 kills: none lost, none run twice), then on a
private cluster (kill -9 of the postmaster, `pg_ctl stop -m fast`): the only fault
was these words.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chalicelib.errors import StoreUnavailable, UncertainWrite
from chalicelib.fdwait import readable
from chalicelib.storage.pg_pipeline import pipelined_transaction
from chalicelib.storage.postgres import from_url, parse_url
from tests.crash_harness import _enqueue, _executions
from tests.pg_support import admin_connect, fresh_schema
from tests.test_worker_real_outages import BOUND, spool_worker, succeeded, until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

ADMIN = "terminating connection due to administrator command"
CRASH_WORDS = "terminated abnormally"


def _listeners(admin: psycopg.Connection[Any], channel: str) -> set[int]:
    """The pids of the sessions LISTENing on `channel` (Spool quotes it)."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query = %s AND pid <> pg_backend_pid()",
        (f'LISTEN "{channel}"',),
    ).fetchall()
    return {row[0] for row in rows}


def _lost_lines(log: Path) -> list[str]:
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "LISTEN connection lost" in line
    ]


def _new_listener(admin: psycopg.Connection[Any], channel: str, gone: set[int]) -> set[int]:
    """The LISTEN sessions on `channel` not among `gone`, once there is one."""
    deadline = time.monotonic() + BOUND
    while not (found := _listeners(admin, channel) - gone):
        assert time.monotonic() < deadline, "the worker never LISTENed (again)"
        time.sleep(0.1)
    return found


def _kill_listener(log: Path, admin: psycopg.Connection[Any], url: str, gone: set[int]) -> str:
    """Terminate the worker's LISTEN session (adding it to `gone`); once the worker
    said so and listens again, the id of a job enqueued then, run."""
    channel = parse_url(url).channel
    said = len(_lost_lines(log))
    fresh = _new_listener(admin, channel, gone)
    for pid in fresh:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    gone |= fresh
    until(lambda: len(_lost_lines(log)) > said, "the loss is said")
    _new_listener(admin, channel, gone)  # a new LISTEN session
    [after] = _enqueue(url, 1, 0.0)
    until(lambda: succeeded(url, [after]), "the job after the kill runs")
    return after


def test_a_worker_whose_listen_session_is_terminated_says_why_and_listens_again(
    tmp_path: Path,
) -> None:
    admin = admin_connect()
    try:
        with fresh_schema() as url, spool_worker(url, tmp_path) as (proc, log):
            gone: set[int] = set()
            ran = [_kill_listener(log, admin, url, gone) for _ in range(3)]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(BOUND) == 0, log.read_text()
    finally:
        admin.close()
    lost = _lost_lines(log)
    assert len(lost) == 3, log.read_text()
    for line in lost:
        assert ADMIN in line, line
        assert CRASH_WORDS not in line, line
    assert _executions(tmp_path / "records") == Counter({i: 1 for i in ran})
    assert "Traceback" not in log.read_text()


def test_a_pipelined_write_whose_session_is_terminated_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = admin_connect()
    try:
        with fresh_schema() as url:
            store = from_url(url)
            try:

                def write(conn: psycopg.Connection[Any]) -> None:
                    with pipelined_transaction(conn):
                        conn.execute("SELECT 1")
                        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
                        assert readable([conn.fileno()], BOUND), "the server never said it"
                        conn.execute("SELECT 2")

                caplog.set_level(logging.WARNING, logger="spool.postgres")
                with pytest.raises(StoreUnavailable, match="may have been applied"):
                    store._run(write)
                assert store.get("j_0123456789abcdef0123456789abcdef") is None  # answers again
            finally:
                store.close()
    finally:
        admin.close()
    said = [m for r in caplog.records if "database connection failed" in (m := r.getMessage())]
    assert len(said) == 1, caplog.text
    assert ADMIN in said[0], said[0]
    assert CRASH_WORDS not in said[0], said[0]


def test_a_write_whose_session_ended_idle_in_its_transaction_applied_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server ends a session idle in a transaction past its
    idle_in_transaction_session_timeout (this process paused mid-transaction: SIGSTOP,
    a frozen VM, a starved CPU) and rolls the transaction back: nothing applied. Said
    as the next statement's error, that was known (IdleInTransactionSessionTimeout);
    read by a pipeline that began inside the transaction (add's keyed or capped
    batch: the key lookup, then the insert), it was only the session's last words,
    and the call a lost reply: 503 "may have been applied" (4 of 400 enqueues under a
    tenant's backlog cap with the database's timeout at 5 ms, on a loaded machine)."""
    with fresh_schema(statement_timeout="0.2") as url:  # and idle_in_transaction_...
        store = from_url(url)
        try:

            def write(conn: psycopg.Connection[Any]) -> None:
                with conn.transaction():
                    conn.execute("SELECT 1")
                    assert readable([conn.fileno()], BOUND), "the server never ended it"
                    with conn.pipeline():
                        conn.execute("SELECT 2").fetchall()

            caplog.set_level(logging.WARNING, logger="spool.postgres")
            with pytest.raises(StoreUnavailable) as ended:
                store._run(write)
            assert not isinstance(ended.value, UncertainWrite), str(ended.value)
            assert "nothing was applied" in str(ended.value)
            assert store.get("j_0123456789abcdef0123456789abcdef") is None  # answers again
        finally:
            store.close()
    said = [m for r in caplog.records if "idle" in (m := r.getMessage())]
    assert said, caplog.text
