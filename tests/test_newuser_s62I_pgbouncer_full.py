"""A PgBouncer with no client slot free is said as full, not as a wrong URL.

Found running docs/self-hosting.md's PgBouncer example: it sets
`default_pool_size = 200` but not `max_client_conn`, whose default is 100, while the
page sends a deployment to PgBouncer once its connections grow "past a few hundred".
The 101st client is refused with "no more connections allowed (max_client_conn)",
and every Spool command then said to check that the server is running and that the
user, password and database in SPOOL_STORE_URL are right (`spool db`: that Postgres
is running and reachable), none of which was wrong. A full server (max_connections)
already got its own hint; PgBouncer's refusal now gets one naming max_client_conn,
and the example sets it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests import pg_support
from tests.pgbouncer_support import pgbouncer
from tests.procs import guarded_env
from tests.test_cli_errors import SPOOL

SLOTS = 2


@pytest.fixture
def full_bouncer() -> Iterator[str]:
    """A store URL through a PgBouncer whose every client slot is taken."""
    import psycopg

    with pgbouncer(extra=f"max_client_conn = {SLOTS}\n") as url:
        held = [psycopg.connect(url, autocommit=True) for _ in range(SLOTS)]
        try:
            yield pg_support.url_for(pg_support.new_schema_name(), base=url)
        finally:
            for conn in held:
                conn.close()


@pytest.mark.parametrize(
    "argv", [["db", "status"], ["db", "migrate"], ["worker", "--burst"], ["enqueue", "echo"]]
)
def test_a_full_pgbouncer_is_named_with_its_setting(full_bouncer: str, argv: list[str]) -> None:
    env = guarded_env(SPOOL_STORE_URL=full_bouncer, SPOOL_DEMO_HANDLERS="true")
    done = subprocess.run([str(SPOOL), *argv], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    assert "no more connections allowed (max_client_conn)" in said
    assert "raise max_client_conn in pgbouncer.ini" in said
    assert "password" not in said and "running and reachable" not in said
    assert "is running" not in said
