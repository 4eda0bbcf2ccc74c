"""wait() goes on when the server refuses its long-poll for too many waits at once.

Reproduced against `spool serve` (s60, helper H): 130 concurrent `AsyncClient.wait(id,
timeout=30)` on one key (the server takes 4 long-polls a key, SPOOL_MAX_WAITS_PER_TENANT)
ended with 126 `TooManyRequests: 429 too_many_waits` and 4 WaitTimeout: each refused
long-poll was retried as a busy server is, and once its retries ran out the error went
to the caller, long before the wait's timeout (with `timeout=None` too), though the
server's own message says "or poll without ?wait". Now a refused long-poll is followed
by a plain look at the job, which is not limited, and a pause: the wait ends with
the job or WaitTimeout, as it promises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from spool_client import AsyncClient, Client, RetryPolicy, WaitTimeout
from tests.apikit import KEY_A
from tests.client_servers import serve
from tests.procs import stop

pytestmark = pytest.mark.slow

# Few retries, so that the refused long-poll's retries end well inside the wait.
# (The server says Retry-After: 1, so they end after about 2 s; the job ends at 4 s.)
QUICK = RetryPolicy(attempts=3, base=0.05, cap=0.2)
KEY = {"X-API-Key": KEY_A}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("throttled")
    served = serve(
        f"sqlite:///{folder / 'spool.db'}",
        folder / "serve.log",
        "--no-worker",  # nothing runs the jobs: they end only when cancelled
        SPOOL_MAX_WAITS_PER_TENANT="1",
    )
    try:
        yield served.url
    finally:
        stop(served.proc)


def _hold_the_one_long_poll(url: str, job_id: str, done: threading.Event) -> threading.Thread:
    """A thread long-polling `job_id` (20 s at a time, no retries) until `done`; returns
    once the key's one long-poll is surely its (one of another job is refused, 429)."""

    def hold() -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                http.get(f"{url}/status/{job_id}", params={"wait": "20"}, headers=KEY)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    with httpx.Client() as http:
        for _ in range(200):
            probe = http.get(f"{url}/status/{job_id}", params={"wait": "0.1"}, headers=KEY)
            if probe.status_code == 429:
                return holder
            done.wait(0.05)
    raise AssertionError("the holder's long-poll was never seen")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_wait_refused_its_long_poll_still_sees_the_job_end(server: str, kind: str) -> None:
    with Client(server, KEY_A) as spool:
        held = spool.enqueue("echo", {"held": kind}, delay=3600)
        job = spool.enqueue("echo", {"waited": kind}, delay=3600)
        done = threading.Event()
        holder = _hold_the_one_long_poll(server, held.id, done)
        try:
            threading.Timer(4.0, spool.cancel, args=(job.id,)).start()
            if kind == "sync":
                with Client(server, KEY_A, retry=QUICK) as waiter:
                    ended = waiter.wait(job.id, timeout=20)
            else:

                async def wait() -> str:
                    async with AsyncClient(server, KEY_A, retry=QUICK) as waiter:
                        return (await waiter.wait(job.id, timeout=20)).state

                ended_state = asyncio.run(wait())
                ended = spool.get(job.id)
                assert ended_state == ended.state
            assert ended.state == "cancelled"
        finally:
            done.set()
            spool.cancel(held.id)  # ends the holder's long-poll
            holder.join(30)


def test_a_refused_wait_on_a_job_that_never_ends_times_out(server: str) -> None:
    with Client(server, KEY_A) as spool:
        held = spool.enqueue("echo", {"held": "timeout"}, delay=3600)
        job = spool.enqueue("echo", {"waited": "timeout"}, delay=3600)
        done = threading.Event()
        holder = _hold_the_one_long_poll(server, held.id, done)
        try:
            with (
                Client(server, KEY_A, retry=QUICK) as waiter,
                pytest.raises(WaitTimeout) as timed_out,
            ):
                waiter.wait(job.id, timeout=2)
            assert timed_out.value.job is not None
            assert timed_out.value.job.state == "queued"
        finally:
            done.set()
            spool.cancel(held.id)  # ends the holder's long-poll
            holder.join(30)
