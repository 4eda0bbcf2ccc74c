"""What a Postgres outage writes to the log: one line per event, none from psycopg.

A call whose connection was lost inside its pipeline (pg_terminate_backend, a server
restart, PgBouncer going away) logged four lines: psycopg's "error ignored
terminating <psycopg.Pipeline [BAD] at 0x...>: the connection is lost" twice,
psycopg_pool's "discarding closed connection: <...RecordedConnection [BAD] ...>",
and Spool's own warning, whose libpq text ("server closed the connection
unexpectedly\\n\\tThis probably means ...") the formatter printed with literal \\n
and \\t escapes. "LISTEN connection lost (...)" carried the same. Spool's own line
says what happened; the others said it again without the reason.
"""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage.postgres import PostgresStore, parse_url
from tests.factories import new_job
from tests.pg_support import BASE_URL, fresh_schema, terminate, wait_until_blocked_by


def _assert_one_line_each(records: list[logging.LogRecord]) -> None:
    for record in records:
        text = record.getMessage()
        assert "\n" not in text and "\t" not in text, (record.name, text)
        assert "error ignored" not in text, (record.name, text)
        assert "discarding closed connection" not in text, (record.name, text)


def test_a_call_that_loses_its_connection_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    # After the cut, the claim asks whether its lost reply had committed: that read
    # waits on the held lock until the statement timeout (30 s by default) and the
    # claim raises what it lost. 10 s gives the same calls, lines and answer sooner,
    # and still leaves the cut (under 1 s) ample time to land while the claim waits.
    with fresh_schema(statement_timeout="10") as url:
        clock = FakeClock()
        settings = parse_url(url)
        store = PostgresStore(settings, clock)
        locker = psycopg.connect(BASE_URL, autocommit=False)
        try:
            store.add([new_job(clock)])
            locker.execute(f'LOCK TABLE "{settings.schema}".jobs IN ACCESS EXCLUSIVE MODE')

            def cut() -> None:  # once the claim waits for the lock, end its session
                watcher = psycopg.connect(BASE_URL, autocommit=True)
                try:
                    wait_until_blocked_by(watcher, locker.info.backend_pid)
                finally:
                    watcher.close()
                assert settings.schema is not None
                terminate(settings.schema)

            cutter = threading.Thread(target=cut)
            cutter.start()
            caplog.clear()
            with pytest.raises(StoreUnavailable):
                store.claim(1, 30)
            cutter.join(30)
        finally:
            locker.close()
            store.close()
    said = [r for r in caplog.records if r.name.startswith(("spool", "psycopg"))]
    assert any("connection" in r.getMessage() for r in said), "the failure was not logged"
    _assert_one_line_each(said)


def test_a_lost_listen_connection_is_logged_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with fresh_schema() as url:
        settings = parse_url(url)
        store = PostgresStore(settings, FakeClock())
        try:
            store.notifier.wait(0)  # LISTEN now
            assert settings.schema is not None
            terminate(settings.schema)
            for _ in range(50):
                store.notifier.wait(0.1)
                if any("LISTEN" in r.getMessage() for r in caplog.records):
                    break
        finally:
            store.close()
    lost = [r for r in caplog.records if "LISTEN connection lost" in r.getMessage()]
    assert lost, "the lost LISTEN connection was not logged"
    _assert_one_line_each(lost)
