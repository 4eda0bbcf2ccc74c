"""A rate limit counts a start from when the claim took it, not from when the claim began
waiting for the write lock: a claim that queued behind another writer must not stamp its
start earlier than it happened, or a later claim's window misses it and the rate is passed."""

from __future__ import annotations

import threading
from datetime import timedelta

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import Job, NewJob
from chalicelib.storage.sqlite import from_url as sqlite_from_url


class _Watched(FakeClock):
    """A FakeClock that says when it was read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = threading.Event()

    def now(self):
        self.read.set()
        return super().now()


def test_a_claim_that_waited_for_the_write_lock_stamps_its_start_when_it_took_the_job(
    tmp_path,
) -> None:
    clock = _Watched()
    store = sqlite_from_url(f"sqlite:///{tmp_path}/rate.db", clock)
    try:
        due = clock.now() - timedelta(seconds=1)
        store.add([NewJob(id=f"j_{i:032x}", type="r", payload={}, run_at=due) for i in range(3)])
        policy = ClaimPolicy(limits=(Limit("type", "r", rate=Rate(1, 1.0)),))
        got: list[Job] = []
        store._write_lock.acquire()  # another writer is in the middle of a transaction
        clock.read.clear()
        waiting = threading.Thread(target=lambda: got.extend(store.claim(1, 30, policy=policy)))
        waiting.start()
        clock.read.wait(0.5)  # the claim has looked at the clock (if it does so before the lock)
        clock.advance(0.6)  # ... and waits 0.6 s for the writer
        store._write_lock.release()
        waiting.join(10)
        assert len(got) == 1  # it started its job 0.6 s after it began
        # 0.55 s after that start: still inside its 1 s window
        # (and its 0.1 s hand-off margin), though 1.15 s after the claim began
        clock.advance(0.55)
        assert store.claim(1, 30, policy=ClaimPolicy(limits=policy.limits)) == []
        clock.advance(0.6)  # past it
        assert len(store.claim(1, 30, policy=ClaimPolicy(limits=policy.limits))) == 1
    finally:
        store.close()
