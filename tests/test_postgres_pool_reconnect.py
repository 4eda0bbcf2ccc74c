"""After a Postgres outage ends, the next call gets a connection.

psycopg_pool retries a failed connect with exponential backoff and no ceiling
(1, 2, 4, 8 ... seconds, until `reconnect_timeout`, which the store set to a day).
An outage of T seconds therefore left the pool's next try up to about T seconds
after the database was back: a 10-minute outage could keep every API process and
worker answering 503 for another 8 minutes. The store now gives each run of tries
a short `reconnect_timeout` (postgres.RECONNECT_WINDOW); a caller waiting for a
connection after that starts a fresh run, whose first try is at once.

The outage is a cut in a forwarder in front of the shared server (never stopped).
"""

from __future__ import annotations

import time

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.storage import open_store
from tests.pg_proxy import PgProxy
from tests.pg_support import fresh_schema, with_port

pytestmark = pytest.mark.timeout(120)

# Long enough for the uncapped backoff to reach 8 s: its tries at 0, 1, 3, 7 and 15 s.
OUTAGE = 8.0


def test_the_first_call_after_an_outage_is_answered() -> None:
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            store = open_store(with_port(direct, proxy.port) + "&pool_timeout=2")
            try:
                assert store.get("j_" + "0" * 32) is None  # the pool is up
                proxy.cut()
                started = time.monotonic()
                failed = 0
                while time.monotonic() - started < OUTAGE:  # callers keep asking
                    with pytest.raises(StoreUnavailable):
                        store.get("j_" + "0" * 32)
                    failed += 1
                    time.sleep(0.2)
                assert failed >= 2
                proxy.restore()
                # One call, bounded by pool_timeout (2 s): it must find (or make) a connection.
                assert store.get("j_" + "0" * 32) is None
            finally:
                store.close()
    finally:
        proxy.close()
