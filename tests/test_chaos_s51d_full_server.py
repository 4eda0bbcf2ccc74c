"""A Postgres with no connection slot left says so in Spool's own log line.

max_connections taken by others (or the role's CONNECTION LIMIT, the same refusal
for one role) makes the pool's new connections fail; a call then times out waiting
for one and answers 503. Spool's line said only "no database connection: couldn't
get a connection after 5.00 sec": the reason (the server's "sorry, too many
clients already") reached the log only through psycopg's own line, which Spool
lets through once a minute (postgres._ReconnectNoise), so most outages showed no
reason at all. The line now names the last reason a connection failed.
"""

from __future__ import annotations

import logging

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.storage.postgres import from_url
from tests.pg_support import admin_connect
from tests.test_worker_pg_refusals import own_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def test_no_free_connection_slot_is_named_in_the_store_s_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="spool.postgres")
    with own_database() as (role, _db, url):
        store = from_url(url + "&pool_min=0&pool_max=1&pool_timeout=1")
        admin = admin_connect()
        try:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
            with pytest.raises(StoreUnavailable):
                store.get("j_0")
        finally:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
            admin.close()
            store.close()
    said = [r.getMessage() for r in caplog.records if r.name == "spool.postgres"]
    assert any("too many connections for role" in line for line in said), said
