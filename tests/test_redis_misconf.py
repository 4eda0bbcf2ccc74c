"""Redis refusing writes because it cannot save to its disk (MISCONF) is an outage.

With RDB snapshots on and stop-writes-on-bgsave-error (Redis's defaults), a
snapshot that fails (a full disk, its dir gone or unwritable) makes the server
refuse every write with MISCONF until a save succeeds. That reply was raised as it
came: every enqueue answered 500, and `spool worker` died at its next claim.
Now it is StoreUnavailable (503 with Retry-After; the worker backs off), as a
server that is loading, busy or out of memory already was.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chalicelib.clock import SystemClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job
from tests.redis_support import free_port, unavailable
from tests.worker_outages import assert_worker_rides_out

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def unsaving(tmp_path: Path) -> Iterator[tuple[RedisStore, redis.Redis]]:
    """A store on a redis-server of the test's own whose snapshot directory is gone:
    after one failed save it refuses writes (MISCONF)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH (Debian package redis-server)")
    directory = tmp_path / "snapshots"
    directory.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "no", "--save", "3600 1", "--stop-writes-on-bgsave-error", "yes",
            "--logfile", str(tmp_path / "redis.log"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(port=port, socket_timeout=5)
    store: RedisStore | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        store = from_url(f"redis://127.0.0.1:{port}/0", SystemClock())
        shutil.rmtree(directory)
        admin.bgsave()
        deadline = time.monotonic() + 30
        while True:  # until the failed save makes it refuse writes
            try:
                admin.set("probe", 1)
            except redis.ResponseError as exc:
                assert str(exc).startswith("MISCONF"), exc
                break
            assert time.monotonic() < deadline, "the failed save never refused a write"
            time.sleep(0.05)
        yield store, admin
    finally:
        if store is not None:
            store.close()
        admin.close()
        server.kill()
        server.wait()


def test_a_write_refused_for_a_failed_save_is_a_store_outage(
    unsaving: tuple[RedisStore, redis.Redis],
) -> None:
    store, _ = unsaving
    with pytest.raises(StoreUnavailable) as refused:
        store.add([new_job(store.clock)])
    assert refused.value.status == 503
    assert "cannot save to its disk" in refused.value.message


def test_the_worker_rides_out_a_failed_save_and_stops_cleanly(
    unsaving: tuple[RedisStore, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = unsaving
    assert_worker_rides_out(store, caplog)
