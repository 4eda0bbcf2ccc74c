"""`spool db migrate` that the server refused says what to fix, not "is it running".

Found from outside (helper G, s58): every failure of `spool db` ended "Check
SPOOL_STORE_URL (or --url) and that Postgres is running and reachable", also when
the server had answered. A read-only database (a standby not yet promoted, or
default_transaction_read_only on) refused `spool db migrate` ("cannot execute
CREATE SCHEMA in a read-only transaction"), and an operator's lock_timeout cancelled
it while another session held a lock on Spool's tables ("canceling statement due to
lock timeout"): both sent the operator to the network. Now the hint names the
primary, and the session holding the lock; only a failed connection keeps the old one.

Real `spool db migrate` processes against the shared server, in schemas of the
test's own; the settings ride in the URL's options, as a role's would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.pg_support import admin_connect, fresh_schema
from tests.procs import guarded_env

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "running and reachable"


def _migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "db", "migrate"],
        cwd=ROOT,
        env=guarded_env(SPOOL_STORE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_read_only_database_names_the_primary() -> None:
    with fresh_schema(migrate=False) as url:
        done = _migrate(url + "&options=" + quote("-c default_transaction_read_only=on"))
    assert done.returncode == 1, done.stderr
    assert "read-only transaction" in done.stderr
    assert "point SPOOL_STORE_URL at the primary" in done.stderr
    assert UNREACHABLE not in done.stderr


def test_a_lock_held_past_the_lock_timeout_names_the_other_session() -> None:
    with fresh_schema() as url:
        schema = url.split("schema=", 1)[1].split("&", 1)[0]
        holder = admin_connect()
        try:
            holder.execute("BEGIN")
            holder.execute(f"LOCK TABLE {schema}.schema_migrations IN ACCESS EXCLUSIVE MODE")
            done = _migrate(url + "&options=" + quote("-c lock_timeout=200"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert done.returncode == 1, done.stderr
    assert "lock timeout" in done.stderr
    assert "Another session held a lock" in done.stderr
    assert UNREACHABLE not in done.stderr


def test_an_unreachable_server_keeps_its_hint() -> None:
    done = _migrate("postgresql://postgres@127.0.0.1:9/spool?connect_timeout=2")
    assert done.returncode == 1, done.stderr
    assert UNREACHABLE in done.stderr
