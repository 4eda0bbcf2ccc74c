"""Postgres for tests: a fresh schema per test on the real server, dropped afterwards
(on the shared server made ahead of the test and dropped behind it: tests/pg_ahead.py).

The server is 127.0.0.1:5432, database `test` (override with SPOOL_TEST_PG_URL).
When it cannot be reached, or a test needs a tool that is missing (the restart
test starts a private server with initdb and pg_ctl: tests/pg_private.py), the
tests skip with the reason, except in CI (CI=true) or with
SPOOL_REQUIRE_POSTGRES=1, where they fail with it: there a skip would hide that
the Postgres backend was never tested.

Tests on parallel workers share the server, so nothing here reaches beyond one
test's own schema (or database): names are random, and teardown ends only the
sessions tagged with that schema's application_name. Nothing here restarts it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

from tests import pg_ahead

BASE_URL = os.environ.get("SPOOL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def must_run() -> bool:
    return (
        os.environ.get("SPOOL_REQUIRE_POSTGRES") == "1"
        or os.environ.get("CI", "").lower() == "true"
    )


def unavailable(reason: str) -> NoReturn:
    """Skip saying why; in CI (see must_run) fail saying why instead."""
    if must_run():
        pytest.fail(f"{reason} (required here: CI=true or SPOOL_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


def url_for(schema: str, base: str = BASE_URL, **options: str) -> str:
    parts = urlsplit(base)
    # application_name tags every connection of this schema, so teardown can end them.
    query = urlencode({"schema": schema, "application_name": schema, **options})
    extra = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, extra, ""))


def admin_connect(base: str = BASE_URL):
    """A plain autocommit connection (no schema), or skip/fail when unreachable."""
    import psycopg

    try:
        return psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"Postgres is not reachable at {base}: {exc}".strip())


def new_schema_name() -> str:
    return f"spool_t_{secrets.token_hex(6)}"


@contextlib.contextmanager
def fresh_schema(migrate: bool = True, *, base: str = BASE_URL, **options: str) -> Iterator[str]:
    """Yield the URL of a new, empty (optionally migrated) schema on the server of
    `base` (the shared one unless a test has its own); drop it afterwards.

    On the shared server the migrated schema is one made ahead and the drop happens
    after the test (tests/pg_ahead.py): a schema no test used, with a random name, as
    before. A private server (which its test may restart or stop) gets neither."""
    from chalicelib.storage.postgres import connect, parse_url

    admin_connect(base).close()  # skip or fail here, before anything is created
    shared = base == BASE_URL
    schema = _AHEAD.take(ahead_depth()) if shared and migrate and ahead_enabled() else None
    made_ahead = schema is not None
    schema = schema or new_schema_name()
    url = url_for(schema, base, **options)
    try:
        if migrate and not made_ahead:
            with connect(parse_url(url)) as conn:
                migrate_at_once(conn, schema, durable=not shared)
        yield url
    finally:
        if shared and ahead_enabled():
            _AHEAD.drop_later(schema)
        else:
            # A fresh connection: the test may have restarted the server meanwhile.
            admin = admin_connect(base)
            try:
                drop_schema(admin, schema, durable=not shared)
            finally:
                admin.close()


def settle() -> None:
    """Return once this process's schema thread is idle (tests/pg_ahead.py)."""
    _AHEAD.settle()


def ahead_enabled() -> bool:
    """SPOOL_TEST_PG_AHEAD=0 makes and drops every schema in its test (to compare)."""
    return ahead_depth() > 0


def ahead_depth() -> int:
    """How many schemas the thread keeps made ahead: SPOOL_TEST_PG_AHEAD, 1 by default;
    none outside a test (PYTEST_CURRENT_TEST, pytest's own): a benchmark in bench/ that
    takes a schema would otherwise be timed beside the thread making the next."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return 0
    return int(os.environ.get("SPOOL_TEST_PG_AHEAD", "1"))


def _make_ahead() -> str:
    """A migrated schema on the shared server, for a test still to come."""
    from chalicelib.storage.postgres import connect, parse_url

    schema = new_schema_name()
    with connect(parse_url(url_for(schema))) as conn:
        migrate_at_once(conn, schema, durable=False)
    return schema


def _drop_behind(schema: str) -> None:
    """Drop a test's schema on the shared server, after the test (it raises, not skips:
    tests/pg_ahead.py tries again at the end)."""
    import psycopg

    with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=10) as admin:
        drop_schema(admin, schema, durable=False)


_AHEAD = pg_ahead.SchemaPool(_make_ahead, _drop_behind)


def drop_schema(admin: Any, schema: str, *, durable: bool = True) -> None:
    """End the sessions of `schema` (workers of a failed test may still hold its
    locks), then drop it: one round trip, and on the shared server (durable=False,
    see migrate_at_once) no wait for the WAL flush of its commit."""
    from psycopg import sql

    steps: list[sql.Composable] = [] if durable else [sql.SQL("SET synchronous_commit = off")]
    steps += [
        sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND application_name = {}"
        ).format(sql.Literal(schema)),
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)),
    ]
    # No parameters: one simple query (parameters would need one statement per query).
    admin.execute(sql.SQL(";\n").join(steps).as_string(admin).encode())


_DROPPING: list[threading.Thread] = []


def drop_database_later(name: str, *then: str, base: str = BASE_URL) -> None:
    """DROP DATABASE `name` WITH (FORCE), then run `then` (a DROP ROLE of its owner), on
    a thread of its own: the test's teardown does not wait for it.

    Dropping a database makes the server take an immediate checkpoint and wait for it,
    which on the shared server (every test's schemas written with synchronous_commit
    off) took 4-5 s, a second one right after it under 1 s: a test of its own database
    spent most of its time in its teardown. The name is the test's own and random, so
    nothing else meets it meanwhile; the session waits for its drops before it ends
    (a drop that fails is logged, as a test's own teardown would have left it)."""
    statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', *then]

    def drop() -> None:
        import psycopg

        try:
            with psycopg.connect(base, autocommit=True, connect_timeout=10) as admin:
                for statement in statements:
                    admin.execute(statement)
        except psycopg.Error:
            logging.getLogger("tests.pg_support").exception("dropping database %s", name)

    thread = threading.Thread(target=drop, name=f"drop-{name}", daemon=True)
    thread.start()
    _DROPPING.append(thread)


@atexit.register
def drops_finished() -> None:
    """Wait for the drops started (tests/conftest.py at the session's end, and at exit),
    the schemas' (tests/pg_ahead.py) and the databases'."""
    _AHEAD.close()
    while _DROPPING:
        _DROPPING.pop().join(120)


def migrate_at_once(conn: Any, schema: str, *, durable: bool = True) -> None:
    """Make `schema` and bring it to the latest migration, as migrations.migrate does
    (the same ledger, each migration in its own transaction with its row), in one
    round trip. `conn`: autocommit, its search_path naming `schema` (connect's).

    About 480 Postgres tests each start on a fresh schema: migrate's 60-odd round
    trips and 15 commits each waiting for the WAL flush took 0.3-0.5 s per test on a
    loaded machine, a third of that as one script. `durable=False` (the shared server,
    which nothing here restarts) also lets the commits skip the flush wait; a private
    server a test may kill keeps it, or a restart could lose the schema. Migrating
    for real is left to the migration and upgrade tests (migrations.migrate, schema_at);
    tests/test_pg_support.py holds this schema to what migrate makes."""
    from psycopg import sql

    from chalicelib.storage import migrations

    steps = [] if durable else ["SET synchronous_commit = off"]
    steps += [sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)).as_string(conn)]
    steps += [migrations.LEDGER]
    for m in migrations.available():  # a name is [a-z0-9_]+ (migrations._FILE): quotable
        steps.append(
            f"BEGIN;\n{m.sql()}\n;\nINSERT INTO schema_migrations (version, name)"
            f" VALUES ({m.version:d}, '{m.name}');\nCOMMIT"
        )
    # No parameters: psycopg sends the script as one simple query of many statements.
    conn.execute(";\n".join(steps).encode())


@contextlib.contextmanager
def sqlite_or_postgres(backend: str, tmp_path: Path) -> Iterator[str]:
    """A store URL several processes can share, for a test parameterized over both:
    a SQLite file in `tmp_path`, or a fresh migrated schema (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/spool.db"
        return
    with fresh_schema() as url:
        yield url


@contextlib.contextmanager
def fresh_store() -> Iterator[Any]:
    """A PostgresStore on a fresh migrated schema, on a FakeClock; closed afterwards."""
    from chalicelib.clock import FakeClock
    from chalicelib.storage.postgres import PostgresStore, parse_url

    with fresh_schema() as url:
        store = PostgresStore(parse_url(url), FakeClock())
        try:
            yield store
        finally:
            store.close()


def with_port(url: str, port: int) -> str:
    """The same URL through another port (a PgProxy in front of the server)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    auth = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{auth}{host}:{port}", parts.path, parts.query, ""))


def terminate(application_name: str) -> int:
    """pg_terminate_backend every session of one test schema: the server drops them."""
    admin = admin_connect()
    try:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND application_name = %s",
            (application_name,),
        ).fetchone()
        return int(row[0]) if row else 0
    finally:
        admin.close()


def schema_at(conn: Any, schema: str | None, version: int) -> None:
    """Create `schema` as a Spool of migration `version` left it (upgrade tests): the
    migrations up to it applied and recorded, none after. `conn`'s search_path must
    already name `schema` (chalicelib.storage.postgres.connect sets it). `schema` is a
    fresh_schema URL's (parse_url types it optional: a URL may name none; these do)."""
    from chalicelib.storage import migrations

    assert schema is not None, "schema_at needs a URL that names its schema"

    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(migrations.LEDGER)
    for m in migrations.available():
        if m.version <= version:
            conn.execute(m.sql().encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (m.version, m.name),
            )


def wait_until_blocked_by(watcher: Any, blocker_pid: int, timeout: float = 20) -> None:
    """Return once some session waits for a lock `blocker_pid` holds (fail after
    `timeout` s): a race test then knows the other side is queued, without timing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (blocker_pid,),
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.01)
    pytest.fail(f"nothing waited for a lock of backend {blocker_pid} within {timeout:g} s")
