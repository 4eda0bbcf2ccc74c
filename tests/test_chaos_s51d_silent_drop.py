"""Pooled Postgres connections that died without a word are not met one call at a time.

A network blip that drops connections silently (a NAT or firewall that lost their
state, an address that moved to another host, a pooler restarted behind a load
balancer) leaves every pooled connection looking alive: nothing to read, so the
checkout check passes it. Each call on one then waits for the call deadline
(statement_timeout + 5 s, 35 s by default) before it is cut. The pool held several
such connections, so calls failed one after another, a deadline each: a worker took
minutes to claim again, and its stop waited for the same cuts. One cut connection
now says the others made before it are likely dead too: the pool is drained (as
for a connection found dead at checkout), so the next call has a fresh connection.
The LISTEN connection, as silent, is replaced too.
"""

from __future__ import annotations

import time

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.storage.postgres import from_url
from tests.factories import new_job
from tests.pg_proxy import pg_proxy
from tests.pg_support import fresh_schema, with_port

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

POOLED = 3


def test_after_a_silent_drop_only_one_call_waits_for_the_deadline() -> None:
    with fresh_schema() as direct, pg_proxy() as proxy:
        url = with_port(direct, proxy.port) + f"&statement_timeout=0.5&pool_min={POOLED}"
        store = from_url(url)
        try:
            deadline = time.monotonic() + 30
            while store._pool.get_stats().get("pool_available", 0) < POOLED:
                assert time.monotonic() < deadline, "the pool never opened its connections"
                time.sleep(0.05)
            store.notifier.wait(0)  # listening
            proxy.drop_silently()
            with pytest.raises(StoreUnavailable, match="gave no answer"):
                store.add([new_job(store.clock)])  # the first call meets the dead network
            for _ in range(POOLED):  # the next ones are answered on fresh connections
                store.add([new_job(store.clock)])
            assert store.notifier.wait(0.2) is True  # wake-ups may be lost: said so
            store.add([new_job(store.clock)])
            assert store.notifier.wait(10) is True  # and they arrive again
        finally:
            store.close()
