"""After a Postgres outage ends, the next call gets a connection.

Two ways psycopg_pool's backoff, which has no ceiling, kept a store answering 503
after the database was fine: the reconnect tries (first test) and the checks of
dead idle connections at checkout (second test).

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

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage import open_store
from tests.factories import new_job
from tests.pg_proxy import PgProxy
from tests.pg_support import admin_connect, fresh_schema, terminate, with_port

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


def _sessions(application_name: str) -> int:
    admin = admin_connect()
    try:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
        return int(row[0]) if row else 0
    finally:
        admin.close()


def test_a_pool_whose_connections_were_all_ended_answers_the_next_call() -> None:
    """A restart of Postgres, or pg_terminate_backend of every session, leaves each
    idle pooled connection dead. psycopg_pool's checkout checks one, drops it, and
    sleeps before the next with the same uncapped backoff (0, 1, 2, 4 ... s): a pool
    of five dead connections took 7 s to reach a live one, past pool_timeout, so
    the call was a 503 (an enqueue during `pg_terminate_backend` every few hundred
    milliseconds was a 503 every time). Now the first dead one found empties the
    pool of the others (they date from the same server), and new ones are made."""
    with fresh_schema(pool_min="5", pool_timeout="2") as url:
        name = parse_qs(urlsplit(url).query)["application_name"][0]
        store = open_store(url, FakeClock())
        try:
            store._pool.wait(30)  # type: ignore[attr-defined]  # all five are open
            assert _sessions(name) >= 5
            assert terminate(name) >= 5
            deadline = time.monotonic() + 30
            while _sessions(name):  # bounded wait for the server to end them
                assert time.monotonic() < deadline, "the sessions were never ended"
                time.sleep(0.05)
            # A write, which is never retried on a lost connection: it must get a
            # live one from the pool within pool_timeout.
            [added] = store.add([new_job(store.clock, "echo")])
            assert store.get(added.job.id) is not None
        finally:
            store.close()


@pytest.mark.parametrize("back_after", [2.6, 3.6])
def test_a_call_waiting_through_the_outage_gets_the_connection_once_it_is_back(
    back_after: float,
) -> None:
    """A restart of 2 to 5 s (pg_ctl restart, a failover): a call that began during it
    waited for a connection for its whole pool_timeout (5 s) and failed with a 503,
    though the database had been back for seconds. Its wait began before the pool's
    run of tries closed (RECONNECT_WINDOW, 2 s); a fresh run starts only for a caller
    that asks again, and the waiting one never did. Now it asks again each window."""
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            name = parse_qs(urlsplit(direct).query)["application_name"][0]
            store = open_store(with_port(direct, proxy.port) + "&pool_timeout=8")
            try:
                assert store.get("j_" + "0" * 32) is None  # the pool is up
                proxy.cut()
                terminate(name)  # its idle connections die with the "server"
                deadline = time.monotonic() + 30
                while _sessions(name):  # bounded wait for the server to end them
                    assert time.monotonic() < deadline, "the sessions were never ended"
                    time.sleep(0.05)
                timer = threading.Timer(back_after, proxy.restore)
                timer.start()
                try:
                    # Within pool_timeout (8 s) once the database is back: the pool's
                    # first run of tries is over by then, so this needs a fresh one.
                    assert store.get("j_" + "0" * 32) is None
                finally:
                    timer.cancel()
            finally:
                store.close()
    finally:
        proxy.close()
