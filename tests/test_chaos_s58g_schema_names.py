"""One schema reached two ways is one store: its locks and wake-ups agree.

Self-hosters often give each deployment its own role with `ALTER ROLE ... SET
search_path = X` and no schema= in SPOOL_STORE_URL, while another host (a new one,
the migration job of a deploy) names it with `?schema=X`; or one has `?schema=public`
and another nothing. Every per-schema key (the turn `spool db migrate` waits for,
the backlog lock of a capped add, the NOTIFY channel of worker wake-ups) was made
from the URL's schema= text, so the same tables had two names: found from outside
(helper G, s58) with two `spool db migrate` processes started at once on one new
schema, one with schema=, one through the search_path: both took a turn, both
applied 0001.., and one failed ("relation "job_counts" already exists", exit 1),
though docs/self-hosting.md says a migration is safe from two hosts at once. The
keys now come from the schema the tables are in (current_schema() when the URL
names none), `public` keeping the keys a URL without schema= always had.

Real server, a schema of the test's own; "blocked" is read from pg_stat_activity
(pg_blocking_pids), never from timing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.clock import SystemClock
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.storage import migrations, postgres_limits
from chalicelib.storage.base import Backlog
from chalicelib.storage.postgres import PostgresStore, parse_url
from tests.factories import new_job
from tests.pg_support import BASE_URL, admin_connect, drop_schema, fresh_schema, new_schema_name
from tests.procs import guarded_env

pytestmark = pytest.mark.timeout(120)

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _through_search_path(schema: str) -> str:
    """A URL with no schema= whose sessions find `schema` first on their search_path,
    as a role with `ALTER ROLE ... SET search_path` does."""
    sep = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{sep}application_name={schema}&options={quote(f'-c search_path={schema}')}"


def _wait_blocked_or_done(watcher: Any, holder_pid: int, done: Any, timeout: float = 30) -> bool:
    """True once a session waits on a lock `holder_pid` holds; False if `done()` says
    the other side finished first (it never waited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        ).fetchone()
        if row and row[0]:
            return True
        if done():
            return False
        time.sleep(0.01)
    pytest.fail(f"neither blocked nor done within {timeout:g} s")


@pytest.fixture
def empty_schema() -> Iterator[str]:
    """A new schema with nothing in it (a role's search_path names it), dropped after."""
    admin = admin_connect()
    name = new_schema_name()
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        drop_schema(admin, name)
        admin.close()


def test_a_migration_through_the_search_path_waits_for_one_naming_the_schema(
    empty_schema: str,
) -> None:
    """While `spool db migrate` with ?schema=X holds its turn, one whose URL reaches X
    through the search_path waits for it, then finds nothing left to do."""
    holder = admin_connect()  # the other host's migrate, at work on X
    watcher = admin_connect()
    try:
        holder.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))", (migrations._LOCK_SPACE, empty_schema)
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.cli", "db", "migrate"],
            cwd=ROOT,
            env=guarded_env(SPOOL_STORE_URL=_through_search_path(empty_schema)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            waited = _wait_blocked_or_done(
                watcher, holder.info.backend_pid, lambda: proc.poll() is not None
            )
        finally:
            holder.execute("SELECT pg_advisory_unlock_all()")
        out, _ = proc.communicate(timeout=60)
        assert waited, f"the second migration did not wait for the first's turn:\n{out}"
        assert proc.returncode == 0, out
        tables = watcher.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'jobs'",
            (empty_schema,),
        ).fetchone()
        assert tables == (1,), out  # migrated where the search_path led, once
    finally:
        holder.close()
        watcher.close()


@pytest.fixture
def two_names() -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """One migrated schema opened twice: by schema=, and through the search_path."""
    with fresh_schema() as url:
        named = PostgresStore(parse_url(url))
        assert named.settings.schema is not None
        reached = PostgresStore(parse_url(_through_search_path(named.settings.schema)))
        try:
            yield named, reached
        finally:
            named.close()
            reached.close()


def test_a_capped_add_waits_for_one_through_the_other_name(
    two_names: tuple[PostgresStore, PostgresStore],
) -> None:
    """A tenant's backlog cap counts and inserts one add at a time across processes
    (base.Backlog): also when the two processes name the schema differently."""
    named, reached = two_names
    clock = SystemClock()
    watcher = admin_connect()
    added: list[Any] = []
    with named._pool.connection() as conn, conn.transaction():
        named._hold_backlog(conn, "acme")  # an add of `named` is counting
        thread = threading.Thread(
            target=lambda: added.extend(
                reached.add([new_job(clock, tenant="acme")], cap=Backlog("acme", 5))
            ),
            daemon=True,
        )
        thread.start()
        waited = _wait_blocked_or_done(
            watcher, conn.info.backend_pid, lambda: not thread.is_alive()
        )
    thread.join(30)
    watcher.close()
    assert waited, "the capped add did not wait for the other's backlog lock"
    assert len(added) == 1 and added[0].created


def test_a_limited_claim_waits_for_one_through_the_other_name(
    two_names: tuple[PostgresStore, PostgresStore],
) -> None:
    """Claims under limits run one at a time across workers, so together they never
    pass a limit (postgres_limits): also when the workers name the schema differently."""
    named, reached = two_names
    reached.add([new_job(SystemClock())])
    policy = ClaimPolicy((Limit("queue", "default", concurrency=1),))
    watcher = admin_connect()
    claimed: list[Any] = []
    with named._pool.connection() as conn, conn.transaction():
        postgres_limits.lock(conn, named.settings.schema)  # a claim of `named` is choosing
        thread = threading.Thread(
            target=lambda: claimed.extend(reached.claim(1, 30, policy=policy)), daemon=True
        )
        thread.start()
        waited = _wait_blocked_or_done(
            watcher, conn.info.backend_pid, lambda: not thread.is_alive()
        )
    thread.join(30)
    watcher.close()
    assert waited, "the limited claim did not wait for the other's limits lock"
    assert len(claimed) == 1


def test_an_enqueue_wakes_workers_that_reach_the_schema_the_other_way(
    two_names: tuple[PostgresStore, PostgresStore],
) -> None:
    """An idle worker LISTENs for new jobs; one added through the other name wakes it."""
    for adder, sleeper in (two_names, two_names[::-1]):
        sleeper.notifier.wait(0)  # listening now; whatever it had is drained
        while sleeper.notifier.wait(0):
            pass
        adder.add([new_job(SystemClock())])
        assert sleeper.notifier.wait(20), "no wake-up reached the other name's worker"
