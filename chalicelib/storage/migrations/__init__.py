"""Versioned SQL migrations for the Postgres store.

Each `NNNN_name.sql` file beside this module is one migration, applied once,
in version order, in its own transaction together with its row in
`schema_migrations`, so a failed migration leaves nothing half-done. An
advisory lock serializes concurrent `spool db migrate` runs (two hosts
deploying at once). Stores refuse to open a database that lacks a migration
this code knows about, so no process ever runs against a schema it does not
understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS_DIR = Path(__file__).parent
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every process.
_LOCK_SPACE = 0x5B001
# The table that records which migrations a schema holds (tests/pg_support.py makes
# its test schemas with the same statement).
LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Status:
    applied: dict[int, datetime]
    available: list[Migration]

    @property
    def pending(self) -> list[Migration]:
        return [m for m in self.available if m.version not in self.applied]

    @property
    def current(self) -> int:
        return max(self.applied, default=0)

    @property
    def newer(self) -> list[int]:
        """Versions recorded here that this Spool does not have: a newer one migrated."""
        known = {m.version for m in self.available}
        return sorted(v for v in self.applied if v not in known)


def available() -> list[Migration]:
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        match = _FILE.fullmatch(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version in {MIGRATIONS_DIR}")
    return found


def latest_version() -> int:
    return max((m.version for m in available()), default=0)


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, datetime]:
    """Versions recorded in this schema; empty when the database was never migrated."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    return {int(str(v)): at for v, at in rows if isinstance(at, datetime)}


def status(conn: psycopg.Connection[tuple[object, ...]]) -> Status:
    return Status(applied(conn), available())


def tables_schema(conn: psycopg.Connection[tuple[object, ...]], schema: str | None) -> str | None:
    """The schema Spool's tables are (or go) in: schema= when the URL names one, else
    the first schema of the connection's search_path that exists (None: none does)."""
    if schema is not None:
        return schema
    row = conn.execute("SELECT current_schema()").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def migrate(conn: psycopg.Connection[tuple[object, ...]], schema: str | None) -> list[Migration]:
    """Apply every pending migration; returns those applied (none on a second run).

    `conn` must be in autocommit mode with search_path already pointing at
    `schema` (the store's connection settings do both).
    """
    if not conn.autocommit:
        raise ValueError("migrate needs an autocommit connection")
    # The turn is named by the schema the tables go to, however the URL reaches it:
    # one host with schema=X and another whose role's search_path is X (or none and
    # `public`) took two turns at once, and one failed on what the other had made.
    lock_key = tables_schema(conn, schema) or "public"
    # The store's statement_timeout bounds its own quick calls; waiting for another
    # migrator's lock, or building an index over millions of jobs, may take longer.
    conn.execute("SET statement_timeout = 0")
    conn.execute("SET idle_in_transaction_session_timeout = 0")
    # Another host's migration holds the turn for as long as it runs: an operator's
    # lock_timeout on the role failed the second of two deploys started at once
    # instead of making it wait. Only the turn is waited for without a bound: the
    # migrations' own statements keep that lock_timeout (RESET: the role's value),
    # so DDL does not queue behind a long transaction, blocking every worker.
    conn.execute("SET lock_timeout = 0")
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_SPACE, lock_key))
    conn.execute("RESET lock_timeout")
    try:
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(LEDGER)
        done = applied(conn)
        ran: list[Migration] = []
        for migration in available():
            if migration.version in done:
                continue
            with conn.transaction():
                # No parameters: psycopg sends the file as one simple query, so a
                # migration may hold many statements.
                conn.execute(migration.sql().encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            ran.append(migration)
        return ran
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_SPACE, lock_key))
