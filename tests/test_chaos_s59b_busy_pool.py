"""A process whose every connection is busy says so, not "cannot be reached".

An admin's `LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE` (a VACUUM FULL, a CLUSTER)
held for 30 s under load: each enqueue waits on the lock holding one of the
process's `pool_max` connections, until statement_timeout cancels it. The calls
behind them find no free connection and give up after pool_timeout with a 503
(bounded, as it should be), but the 503 said "the database cannot be reached"
and the log "no database connection: couldn't get a connection after 1.00 sec":
the server answered all along, and the operator was sent to the network instead
of to the lock. Both now say every connection of this process is in use.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.storage.postgres import PostgresStore, from_url
from tests.pg_support import admin_connect, fresh_schema, wait_until_blocked_by

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def test_a_call_finding_every_connection_busy_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spool.postgres")
    with fresh_schema(pool_min="0", pool_max="1", pool_timeout="1", statement_timeout="30") as url:
        store = from_url(url)
        schema = store.settings.schema
        admin = admin_connect()
        watcher = admin_connect()
        waiting = threading.Thread(target=_blocked_get, args=(store,), daemon=True)
        try:
            admin.execute("BEGIN")
            admin.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')
            blocker = admin.execute("SELECT pg_backend_pid()").fetchone()[0]
            waiting.start()
            wait_until_blocked_by(watcher, blocker)
            with pytest.raises(StoreUnavailable) as busy:
                store.get("j_1")
        finally:
            admin.execute("ROLLBACK")
            waiting.join(timeout=30)
            admin.close()
            watcher.close()
            store.close()
    assert "cannot be reached" not in busy.value.message, busy.value.message
    assert "in use" in busy.value.message, busy.value.message
    said = [r.getMessage() for r in caplog.records if r.name == "spool.postgres"]
    assert any("all 1 of this process's connections are in use" in s for s in said), said
    assert any("within pool_timeout (1 s)" in s for s in said), said


def _blocked_get(store: PostgresStore) -> None:
    """The call that waits on the lock; what it ends with is not this test's subject."""
    with contextlib.suppress(StoreUnavailable):
        store.get("j_0")
