"""A Postgres that refuses `spool worker`'s connections ends it, saying why.

A running worker's role is made unable to log in, loses CONNECT on its database,
or its database is dropped: each time the server refuses every new connection
with the same answer, and no wait heals it (the URL is read once, at start).
The worker used to take the pool's "couldn't get a connection" for an outage
and wait for ever, saying "waits it out". Now it exits non-zero naming the
reason. A connection cut without a refusal is still waited out
(tests/test_worker_real_outages.py).

pg_hba is `trust` on 127.0.0.1 here, so no password is ever checked: the
refusals come from a role and a database of the test's own, made for it and
dropped after it (names random: other tests share the server).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from chalicelib.storage import migrations
from chalicelib.storage.postgres import connect, parse_url
from chalicelib.store_outage import fatal_error, is_fatal
from tests.crash_harness import _enqueue
from tests.pg_support import BASE_URL, admin_connect, drop_database_later, url_for
from tests.test_worker_real_outages import BOUND, spool_worker, succeeded, until

pytestmark = pytest.mark.timeout(240)


def _as(role: str, database: str) -> str:
    parts = urlsplit(BASE_URL)
    netloc = f"{role}@{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", "", ""))


@contextmanager
def own_database() -> Iterator[tuple[str, str, str]]:
    """(role, database, store URL): a role that owns a database of its own, migrated."""
    name = f"spool_refusal_{secrets.token_hex(5)}"
    admin = admin_connect()
    try:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        url = url_for("spool", _as(name, name))
        with connect(parse_url(url)) as conn:
            migrations.migrate(conn, "spool")
        yield name, name, url
    finally:
        admin.close()
        drop_database_later(name, f'DROP ROLE IF EXISTS "{name}"')


def _cut_sessions(admin: psycopg.Connection, role: str) -> None:
    """End the role's sessions: the worker's pool must connect again."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
    )


def _start_refusing(refusal: str, role: str, db: str) -> None:
    """Make the server refuse the role's new connections, and end its sessions."""
    admin = admin_connect()
    try:
        for statement in REFUSALS[refusal]:
            admin.execute(statement.format(role=role, db=db))
        _cut_sessions(admin, role)
    finally:
        admin.close()


REFUSALS = {
    "role-may-not-log-in": ['ALTER ROLE "{role}" NOLOGIN'],
    "no-connect-privilege": ['REVOKE CONNECT ON DATABASE "{db}" FROM PUBLIC, "{role}"'],
    "database-dropped": ['DROP DATABASE "{db}" WITH (FORCE)'],
}
SAID = {
    "role-may-not-log-in": "the store refused this process's credentials",
    "no-connect-privilege": "the store refused this process's connection to its database",
    "database-dropped": "the store refused this process's connection to its database",
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_worker_whose_connections_postgres_starts_refusing_exits_saying_why(
    tmp_path: Path, refusal: str
) -> None:
    with own_database() as (role, db, url):
        with spool_worker(url, tmp_path) as (proc, log):
            first = _enqueue(url, 1, 0.0)
            until(lambda: succeeded(url, first), "a job runs")
            _start_refusing(refusal, role, db)
            returncode = proc.wait(BOUND)  # raises TimeoutExpired if it waits for ever
        text = log.read_text()
        assert returncode != 0, text
        assert SAID[refusal] in text, text
        assert "start it again" in text


@pytest.mark.timeout(45)
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_refusal_is_answered_without_waiting_out_the_pool_timeout(refusal: str) -> None:
    """A refused connection was waited for until pool_timeout (5 s by default): /health,
    bounded at 3 s, said "no answer within 3 s" instead of the refusal, and every API
    call held its client that long. The server refuses the same URL every time, so one
    reconnect window of tries is enough. pool_timeout is 120 s here: waited out, the
    test's own 45 s timeout fails it."""
    from chalicelib.errors import StoreUnavailable
    from chalicelib.storage.pg_refusals import refusal as refusal_of
    from chalicelib.storage.postgres import from_url

    with own_database() as (role, db, url):
        store = from_url(f"{url}&pool_timeout=120")
        try:
            assert store.get("j_" + "0" * 32) is None
            _start_refusing(refusal, role, db)
            for _ in range(2):  # the first call may meet the cut session instead
                with pytest.raises(StoreUnavailable) as refused:
                    store.get("j_" + "0" * 32)
            assert refused.value.message == "the database cannot be reached; try again shortly"
            assert refused.value.__cause__ is not None
            assert refusal_of(refused.value.__cause__) is not None
        finally:
            store.close()


@pytest.mark.parametrize(
    ("url", "fatal"),
    [
        (_as("spool_no_such_role_c", "postgres"), True),
        (_as("postgres", "spool_no_such_database_c"), True),
        ("postgresql://postgres@127.0.0.1:9/postgres", False),  # nothing listens: an outage
    ],
    ids=["no-such-role", "no-such-database", "nothing-listening"],
)
def test_a_refused_connection_is_fatal_and_an_unreachable_server_is_not(
    url: str, fatal: bool
) -> None:
    """libpq gives a refused connection no SQLSTATE: the server's words decide."""
    admin_connect().close()  # skip or fail here when there is no server
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(url, connect_timeout=3).close()
    assert raised.value.sqlstate is None  # why the words, not the code
    assert is_fatal(raised.value) is fatal
    if fatal:
        assert "start it again" in str(fatal_error(raised.value))


SERVER = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '


@pytest.mark.parametrize(
    ("said", "meaning"),
    [
        ('FATAL:  password authentication failed for user "spool"', "credentials"),
        ('FATAL:  role "spool" is not permitted to log in', "credentials"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "spool"', "credentials"),
        ("fe_sendauth: no password supplied", "credentials"),
        ('FATAL:  permission denied for database "jobs"', "database"),
        ('FATAL:  database "jobs" does not exist', "database"),
        ("FATAL:  the database system is starting up", None),
        ("FATAL:  the database system is shutting down", None),
        ("FATAL:  sorry, too many clients already", None),
        ("FATAL:  terminating connection due to administrator command", None),
        ('FATAL:  database "jobs" is not currently accepting connections', None),
        ("Connection refused", None),
    ],
)
def test_which_words_of_the_server_are_a_refusal(said: str, meaning: str | None) -> None:
    """The words libpq reports (a password is never checked on this test server, whose
    pg_hba is trust): a refusal ends the worker; a server starting, stopping or full is
    waited out."""
    from chalicelib.storage.pg_refusals import refusal

    error = psycopg.OperationalError(SERVER + said)
    assert refusal(error) == meaning
    assert is_fatal(error) is (meaning is not None)
