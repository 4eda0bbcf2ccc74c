"""A throwaway Postgres schema per bench run, dropped however the run ends.

Benches measure fresh stores side by side on the one local server; a schema each
keeps their tables apart without a database per run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

# SPOOL_BENCH_PG_URL picks the database (helpers sharing a server each use their own).
PG_BASE = os.environ.get("SPOOL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_schema(prefix: str, *, migrate: bool = True, query: str = "") -> Iterator[str]:
    """The store URL of a new schema `prefix_<random>` (`query`: more URL parameters);
    with `migrate`, Spool's tables are made in it first, by this checkout's code."""
    import psycopg

    schema = f"{prefix}_{secrets.token_hex(4)}"
    url = f"{PG_BASE}?schema={schema}{query}"
    try:
        if migrate:
            from chalicelib.storage import migrations
            from chalicelib.storage.postgres import connect, parse_url

            with connect(parse_url(url)) as conn:
                migrations.migrate(conn, schema)
                conn.commit()
        yield url
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
