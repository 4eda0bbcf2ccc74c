"""Spool on a Postgres with no connection slot left says the server is full.

max_connections taken by other clients (or the role's CONNECTION LIMIT, the same
refusal for one role): `spool db status` and `spool db migrate` quoted the
server's "too many clients already" and then sent the operator to the network,
"Check SPOOL_STORE_URL (or --url) and that Postgres is running and reachable",
although the server had answered; every other command, `spool worker` and
`spool serve` at start said "Check that the server is running and accepts
connections on that host and port, and that the user, password and database ...
are right". They now say the server has no free connection slot, and what frees one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from local.db import _failure_hint
from tests.pg_support import admin_connect
from tests.procs import run_spool
from tests.test_worker_pg_refusals import own_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


@pytest.mark.parametrize("command", ["status", "migrate"])
def test_spool_db_on_a_role_at_its_connection_limit_says_the_server_is_full(
    tmp_path: Path, command: str
) -> None:
    with own_database() as (role, _db, url):
        admin = admin_connect()
        try:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
            done = run_spool(tmp_path, "db", command, "--url", url)
        finally:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
            admin.close()
    assert done.returncode == 1, done.stderr
    assert "too many connections for role" in done.stderr, done.stderr
    assert "no connection slot free" in done.stderr, done.stderr
    assert "pool_max" in done.stderr, done.stderr
    assert "running and reachable" not in done.stderr, done.stderr


@pytest.mark.parametrize("argv", [("status", "j_0"), ("worker", "--burst", "--quiet")])
def test_a_command_starting_on_a_role_at_its_connection_limit_says_the_server_is_full(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    with own_database() as (role, _db, url):
        admin = admin_connect()
        try:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
            done = run_spool(tmp_path, *argv, SPOOL_STORE_URL=url)
        finally:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
            admin.close()
    assert done.returncode == 1, done.stderr
    assert "too many connections for role" in done.stderr, done.stderr
    assert "no connection slot free" in done.stderr, done.stderr
    assert "user, password and database" not in done.stderr, done.stderr
    assert "that the store is running" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "said",
    [
        "FATAL:  sorry, too many clients already",
        'FATAL:  too many connections for database "spool"',
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    ],
)
def test_every_full_server_refusal_gets_the_full_server_hint(said: str) -> None:
    import psycopg

    exc = psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {said}'
    )
    assert "no connection slot free" in _failure_hint(exc)


def test_an_unreachable_server_still_gets_the_reachability_hint() -> None:
    import psycopg

    exc = psycopg.OperationalError("connection failed: Connection refused")
    assert "running and reachable" in _failure_hint(exc)
