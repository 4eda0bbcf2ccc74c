"""After a claim that leaves no room for another, the drain waits for its pool (as
between any two steps) instead of stepping again at once.

A step writes the outbox, then claims. Stepping again straight after a claim wrote
only what finished during that claim, a write of its own: with start marks a no-op
drain at concurrency 8 wrote its completions in about 680 writes of ~29 jobs
(one right after each claim, of ~12) instead of ~250 of ~80 (docs/benchmarks.md,
"(stop 53)"). The completions that land during a claim now go with the next batch,
written within `flush_delay` (or when the pool runs low) like any other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import Completion, Job
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job
from tests.test_worker import wait_until


def test_completions_that_land_during_a_claim_wait_for_the_next_batch(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        return None

    mem.add([new_job(clock, "noop") for _ in range(10)])
    # flush_delay long: completions are written when the pool runs low (or the drain's
    # own bound on a wait), not on a timer.
    worker = Worker(mem, reg, WorkerConfig(concurrency=2, batch_size=100, flush_delay=3600))
    worker._ensure_threads()
    assert wait_until(lambda: worker._state.idle == 2)
    worker._busy_seconds = 1e-4  # quick handlers: prefetch (as once some have been timed)
    writes: list[int] = []
    waited: list[bool] = []
    real_claim, real_finish = mem.claim, mem.finish

    def claim(*args: Any, **kwargs: Any) -> list[Job]:
        jobs = real_claim(*args, **kwargs)
        if not kwargs.get("started", True) and not waited:
            # The claim beyond the idle threads: their two jobs finish while it runs.
            waited.append(wait_until(lambda: len(worker._state.outbox) == 2))
        return jobs

    def finish(completions: Sequence[Completion]) -> list[bool]:
        writes.append(len(completions))
        return real_finish(completions)

    mem.claim = claim  # type: ignore[method-assign]
    mem.finish = finish  # type: ignore[method-assign]
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert waited == [True]
    assert stats.succeeded == 10
    assert sum(writes) == 10
    # Not the two that finished during the claim alone: they went with the next ones.
    assert writes[0] > 2
