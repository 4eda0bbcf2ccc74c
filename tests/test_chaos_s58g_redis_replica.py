"""A Redis that has become a replica, or lacks its replicas, says so and that nothing was applied.

Found from outside (helper G, s58): `spool enqueue` against a redis-server that a
failover demoted to a replica (REPLICAOF) answered "the job store is busy; try
again shortly" and the log said "redis is not ready: You can't write against a
read only replica." with no fix; a primary whose min-replicas-to-write is not met
(NOREPLICAS) answered the same. Both refusals last until an operator or a failover
changes the server's role or its replicas, and Redis refuses a script at its first
write, so nothing was applied: the answer now says which refusal it is, that nothing
was applied, and to try again later (Retry-After 5, as a Postgres standby's); the log
names the fix /health names. The worker still waits it out, and carries on once the
server takes writes again (REPLICAOF NO ONE: the replica promoted).

Against a redis-server of the test's own on a free 127.0.0.1 port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chalicelib.clock import SystemClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job
from tests.redis_support import PrivateServer, free_port, private_server
from tests.worker_outages import assert_worker_rides_out

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateServer]:
    with private_server(tmp_path / "redis", appendfsync="no") as running:
        yield running


@pytest.fixture
def store(server: PrivateServer) -> Iterator[RedisStore]:
    opened = from_url(server.url, SystemClock())
    try:
        yield opened
    finally:
        opened.close()


def _admin(server: PrivateServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)


def test_a_demoted_server_refuses_an_enqueue_saying_nothing_was_applied(
    server: PrivateServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """REPLICAOF a primary that cannot be reached: the data stays, read-only."""
    kept = store.add([new_job(store.clock)])[0].job
    admin = _admin(server)
    try:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        with (
            caplog.at_level(logging.WARNING, "spool.redis"),
            pytest.raises(StoreUnavailable) as refused,
        ):
            store.add([new_job(store.clock)])
        said = refused.value
        assert said.status == 503
        assert "read-only replica" in said.message and "nothing was applied" in said.message
        assert "busy" not in said.message
        assert said.retry_after == 5
        assert any("point SPOOL_STORE_URL at the primary" in r.message for r in caplog.records)
        assert store.get(kept.id) is not None  # reads still answer
        admin.execute_command("REPLICAOF", "NO", "ONE")  # promoted: writes again
        assert store.add([new_job(store.clock)])[0].created
    finally:
        admin.close()


def test_a_primary_short_of_its_replicas_refuses_an_enqueue_saying_so(
    server: PrivateServer, store: RedisStore
) -> None:
    admin = _admin(server)
    try:
        admin.config_set("min-replicas-to-write", 1)
        with pytest.raises(StoreUnavailable) as refused:
            store.add([new_job(store.clock)])
        said = refused.value
        assert "replicas" in said.message and "nothing was applied" in said.message
        assert "busy" not in said.message
        admin.config_set("min-replicas-to-write", 0)
        assert store.add([new_job(store.clock)])[0].created
    finally:
        admin.close()


def test_the_worker_rides_out_a_demoted_server(
    server: PrivateServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    admin = _admin(server)
    try:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        assert_worker_rides_out(store, caplog)
    finally:
        admin.close()
