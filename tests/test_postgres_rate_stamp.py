"""A rate limit on Postgres counts a start from when the claim took it, not from when the
claim began to wait for the limits' advisory lock.

Found by a race hunt (three workers under `"1/s"`: two starts 0.43 s apart): a claim that
queued behind another claim's lock stamped its starts with the clock it read before
waiting, so a later claim's window (now - 1 s) missed them and the rate was passed.
Driven by a fake clock and a second connection holding the lock, not by timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import Job, NewJob
from chalicelib.storage.postgres import PostgresStore, from_url, parse_url
from chalicelib.storage.postgres_limits import LOCK_SPACE
from tests.pg_support import admin_connect, fresh_schema, wait_until_blocked_by

pytestmark = pytest.mark.postgres


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as migrated:
        yield migrated


def test_a_claim_that_waited_for_the_lock_stamps_its_start_when_it_took_the_job(
    url: str,
) -> None:
    clock = FakeClock()
    store: PostgresStore = from_url(url, clock)
    holder = admin_connect()
    watcher = admin_connect()
    try:
        due = clock.now() - timedelta(seconds=1)
        store.add([NewJob(id=f"j_{i:032x}", type="r", payload={}, run_at=due) for i in range(3)])
        limits = (Limit("type", "r", rate=Rate(1, 1.0)),)
        # Another claim holds the limits' lock ...
        holder.execute(
            "SELECT pg_advisory_lock(%s::int, hashtext(%s::text))",
            (LOCK_SPACE, parse_url(url).schema),
        )
        got: list[Job] = []
        claiming = threading.Thread(
            target=lambda: got.extend(store.claim(1, 30, policy=ClaimPolicy(limits=limits)))
        )
        claiming.start()
        wait_until_blocked_by(watcher, holder.info.backend_pid)  # ... until this claim waits
        clock.advance(0.6)  # it waits 0.6 s
        holder.execute(
            "SELECT pg_advisory_unlock(%s::int, hashtext(%s::text))",
            (LOCK_SPACE, parse_url(url).schema),
        )
        claiming.join(20)
        assert not claiming.is_alive()
        assert len(got) == 1 and got[0].started_at == clock.now()  # started when it took it
        # 0.55 s after that start: inside its 1 s window
        # (and its 0.1 s hand-off margin), though 1.15 s after the claim began
        clock.advance(0.55)
        assert store.claim(1, 30, policy=ClaimPolicy(limits=limits)) == []
        clock.advance(0.6)  # past it
        assert len(store.claim(1, 30, policy=ClaimPolicy(limits=limits))) == 1
    finally:
        holder.close()
        watcher.close()
        store.close()
