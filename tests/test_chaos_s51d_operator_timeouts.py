"""Timeouts an operator sets on Spool's role (ALTER ROLE ... SET) do not break Spool.

- idle_session_timeout (Postgres 14+) ends any session idle that long. Spool's
  sessions are idle by design: the worker's LISTEN connection waits for wake-ups,
  and pooled connections wait for the next call. The server cut the LISTEN
  connection every time (a WARNING "LISTEN connection lost" each idle_session_timeout,
  wake-ups lost meanwhile), and a pooled connection the server ended just as a call
  took it failed that call: an enqueue answered 503 "may have been applied".
  Spool's sessions now turn it off for themselves (the pool already closes the idle
  connections it does not need); a URL's own `options=-c idle_session_timeout=...`
  still wins.
- lock_timeout bounded the advisory lock `spool db migrate` waits on while another
  host migrates: the second of two migrations started at once failed with "canceling
  statement due to lock timeout" instead of taking its turn (docs/self-hosting.md:
  "safe from two hosts at once"). The turn is now waited for; the migration's own
  statements keep the operator's lock_timeout.

The role and its database are the test's own (tests/test_worker_pg_refusals.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import migrations
from chalicelib.storage.postgres import connect, from_url, parse_url
from tests.factories import new_job
from tests.pg_support import BASE_URL, admin_connect, wait_until_blocked_by
from tests.test_worker_pg_refusals import own_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

IDLE_MS = 300


def _set_on_role(role: str, setting: str, value: str) -> None:
    admin = admin_connect()
    try:
        admin.execute(f"ALTER ROLE \"{role}\" SET {setting} = '{value}'")
    finally:
        admin.close()


def test_an_operator_s_idle_session_timeout_ends_no_pooled_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with own_database() as (role, _db, url):
        _set_on_role(role, "idle_session_timeout", f"{IDLE_MS}ms")
        store = from_url(url + "&pool_min=1&pool_max=1")
        try:
            store.add([new_job(store.clock)])
            before = store._run(lambda conn: conn.info.backend_pid, read=True)
            time.sleep(IDLE_MS / 1000 * 2)  # idle past the operator's bound
            store.add([new_job(store.clock)])
            after = store._run(lambda conn: conn.info.backend_pid, read=True)
        finally:
            store.close()
    assert after == before, "the server ended the idle pooled connection"
    assert "idle-session timeout" not in caplog.text


def test_an_operator_s_idle_session_timeout_leaves_the_listen_connection_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="spool.postgres")
    with own_database() as (role, _db, url):
        _set_on_role(role, "idle_session_timeout", f"{IDLE_MS}ms")
        store = from_url(url)
        try:
            store.notifier.wait(0)  # listening
            assert store.notifier.wait(IDLE_MS / 1000 * 3) is False  # idle past the bound
            assert store.notifier.wait(0.1) is False  # no lost connection to report
            store.add([new_job(store.clock)])
            assert store.notifier.wait(10) is True  # and wake-ups still arrive
        finally:
            store.close()
    assert "LISTEN connection lost" not in caplog.text


def test_the_url_s_own_idle_session_timeout_still_wins() -> None:
    with own_database() as (_role, _db, url):
        settings = parse_url(url + "&options=-c%20idle_session_timeout%3D12345")
        with connect(settings) as conn:
            row = conn.execute("SHOW idle_session_timeout").fetchone()
    assert row is not None and row[0] == "12345ms"


def test_a_migration_waits_its_turn_past_an_operator_s_lock_timeout() -> None:
    with own_database() as (role, db, url):
        _set_on_role(role, "lock_timeout", "200ms")
        settings = parse_url(url)
        holder = _connect_to(db)  # another host's `spool db migrate`, holding the turn
        watcher = _connect_to(db)
        failed: list[BaseException] = []
        try:
            holder.execute(
                "SELECT pg_advisory_lock(%s, hashtext('spool'))", (migrations._LOCK_SPACE,)
            )
            [(pid,)] = holder.execute("SELECT pg_backend_pid()").fetchall()

            def migrate() -> None:
                try:
                    with connect(settings) as conn:
                        migrations.migrate(conn, settings.schema)
                except BaseException as exc:
                    failed.append(exc)

            thread = threading.Thread(target=migrate, daemon=True)
            thread.start()
            wait_until_blocked_by(watcher, pid)
            time.sleep(0.6)  # past the role's lock_timeout: the point of the test
            holder.execute("SELECT pg_advisory_unlock_all()")
            thread.join(30)
            assert not thread.is_alive()
        finally:
            holder.close()
            watcher.close()
    assert failed == []


def _connect_to(db: str) -> Any:
    """An admin connection to the test's own database (advisory locks are per database)."""
    parts = urlsplit(BASE_URL)
    return admin_connect(urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", "")))


# Output formats an operator may set on the role or database (a DateStyle to the
# local taste, say). psycopg parses timestamps in ISO DateStyle only, intervals in
# the `postgres` IntervalStyle only, and reads floats as the server prints them:
# under `SQL, DMY` every store opened with NotImplementedError ("can't parse
# timestamptz with DateStyle 'SQL, DMY'"), a traceback at `spool serve`'s start.
OUTPUT_STYLES = {
    "datestyle": "SQL, DMY",
    "intervalstyle": "sql_standard",
    "extra_float_digits": "-3",
    "bytea_output": "escape",
}


def test_a_role_s_own_output_styles_do_not_break_the_store() -> None:
    with own_database() as (role, _db, url):
        for setting, value in OUTPUT_STYLES.items():
            _set_on_role(role, setting, value)
        store = from_url(url)
        try:
            [added] = store.add([new_job(store.clock)])
            got = store.get(added.job.id)
            assert got is not None and got.created_at == added.job.created_at
            [claimed] = store.claim(1, 30.0)
            assert claimed.lease_expires_at is not None
            assert store.take_tokens("k", 1000.0, 5) == 0.0
        finally:
            store.close()


def test_a_role_s_default_isolation_is_not_the_store_s() -> None:
    """A role whose transactions default to SERIALIZABLE: claims racing enqueues failed
    as serialization failures, retried and then answered "rolled back" (503)."""
    with own_database() as (role, _db, url):
        _set_on_role(role, "default_transaction_isolation", "serializable")
        store = from_url(url + "&pool_max=6")
        failed: list[BaseException] = []

        def enqueue() -> None:
            try:
                for _ in range(60):
                    store.add([new_job(store.clock) for _ in range(3)])
            except BaseException as exc:
                failed.append(exc)

        def claim() -> None:
            try:
                for _ in range(60):
                    jobs = store.claim(3, 30.0)
                    store.start([(j.id, j.lease_token or "") for j in jobs])
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=f) for f in (enqueue, enqueue, claim, claim, claim)]
        try:
            row = store._run(
                lambda conn: conn.execute("SHOW transaction_isolation").fetchone(), read=True
            )
            isolation = None if row is None else row[0]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(45)
        finally:
            store.close()
    assert isolation == "read committed"
    assert failed == []


def test_an_operator_s_lock_timeout_is_said_as_a_cancellation_not_a_lost_connection(
    handlers: Registry,
) -> None:
    """A call the role's lock_timeout cancelled was reported as "the database connection
    failed before it answered" (LockNotAvailable is an OperationalError): the log and
    the 503 sent the operator to look at the network, when a lock held too long was
    the cause and the connection was fine."""
    with own_database() as (role, db, url):
        _set_on_role(role, "lock_timeout", "100ms")
        store = from_url(url)
        holder = _connect_to(db)
        try:
            holder.execute("SET search_path = spool")
            with holder.transaction():
                holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StoreUnavailable) as held:
                    Service(store, handlers).enqueue([EnqueueRequest(type="echo")], "t")
                with pytest.raises(StoreUnavailable) as read:
                    store.get("j_0")
            said = held.value.message
            assert "cancelled the call (canceling statement due to lock timeout)" in said
            assert "connection failed" not in said
            assert "lock timeout" in read.value.message
            assert sum(store.counts().values()) == 0
        finally:
            holder.close()
            store.close()
