"""A Redis store whose server refuses the connection says nothing was applied.

Found by a chaos run (s48, reproduced by helper B, s49): with the redis-server
stopped, every write (an enqueue, a cancel, a redrive) answered 503 "the job store
connection failed before it answered, so this change may have been applied:
check its state before retrying". A refused connect sends nothing, so that told
clients to go and look for a change that cannot have happened (and a client
without an idempotency key to fear a duplicate). A refused or failed connect now
says the store cannot be reached and nothing was applied; a request that was
sent and whose reply was lost (here: writes paused with CLIENT PAUSE past the
store's timeout) still says it may have been applied.

Against a real redis-server of the test's own on a free 127.0.0.1 port.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job
from tests.procs import guarded_env, spool_serve, stop
from tests.redis_support import PrivateServer, private_server

pytestmark = pytest.mark.timeout(120)

KEY, TENANT = "refused-key-0123456789", "default"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateServer]:
    with private_server(tmp_path / "redis", appendfsync="no") as running:
        yield running


def _store(server: PrivateServer, timeout: str = "5") -> RedisStore:
    return from_url(f"{server.url}?prefix=refused&timeout={timeout}")


def _refusal(call: object) -> StoreUnavailable:
    assert callable(call)
    with pytest.raises(StoreUnavailable) as refused:
        call()
    return refused.value


def test_a_write_to_a_stopped_server_says_nothing_was_applied(server: PrivateServer) -> None:
    store = _store(server)
    try:
        clock = FakeClock(store.clock.now())
        [kept] = store.add([new_job(clock)])  # the pool holds a connection to it
        server.stop()
        for write in (
            lambda: store.add([new_job(clock)]),  # first: the pooled connection is dead
            lambda: store.add([new_job(clock)]),  # then: connect() is refused at once
            lambda: store.cancel(kept.job.id),
        ):
            message = _refusal(write).message
            assert "may have been applied" not in message, message
            assert "nothing was applied" in message, message
        read = _refusal(lambda: store.get(kept.job.id)).message
        assert "may have been applied" not in read and "try again" in read, read
    finally:
        store.close()


def test_a_write_sent_whose_reply_is_lost_still_says_it_may_have_been_applied(
    server: PrivateServer,
) -> None:
    """The other side of the line: the script was sent; its reply did not come within
    the store's timeout (writes paused on the server), so the client cannot know."""
    store = _store(server, timeout="0.5")
    admin = redis.Redis(port=server.port, socket_timeout=10)
    try:
        clock = FakeClock(store.clock.now())
        store.add([new_job(clock)])
        admin.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        message = _refusal(lambda: store.add([new_job(clock)])).message
        assert "may have been applied" in message, message
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        store.close()


def test_spool_serve_answers_an_enqueue_to_a_stopped_redis_with_nothing_applied(
    server: PrivateServer,
) -> None:
    env = guarded_env(
        SPOOL_STORE_URL=f"{server.url}?prefix=refused-serve",
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_DEMO_HANDLERS="true",
    )
    served = spool_serve("--no-worker", env=env, stderr=subprocess.DEVNULL)
    try:
        headers = {"X-API-Key": KEY}
        made = requests.post(
            f"{served.url}/enqueue", json={"type": "echo"}, headers=headers, timeout=10
        )
        assert made.status_code == 201, made.text
        server.stop()
        for _ in range(2):  # the pooled connection's end, then a refused connect
            reply = requests.post(
                f"{served.url}/enqueue", json={"type": "echo"}, headers=headers, timeout=30
            )
            assert reply.status_code == 503, reply.text
            assert int(reply.headers["Retry-After"]) > 0
            message = reply.json()["error"]["message"]
            assert "may have been applied" not in message, message
            assert "nothing was applied" in message, message
    finally:
        stop(served.proc)
