"""A rate limit on DynamoDB counts a start from when the claim took the job, not from when
the claim began: a claim whose transaction lost a race to another claim reads the limit
state again and commits later, and must not stamp its start at the moment it first looked
at the clock, or a later claim's window misses that start and the rate is passed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import NewJob
from chalicelib.storage import open_store


def test_a_claim_that_lost_a_race_stamps_its_start_when_it_took_the_job() -> None:
    clock = FakeClock()
    with mock_aws():
        store: Any = open_store("dynamodb://jobs?create=1", clock)
        due = clock.now() - timedelta(seconds=1)
        store.add([NewJob(id=f"j_{i:032x}", type="r", payload={}, run_at=due) for i in range(4)])
        limits = (Limit("type", "r", rate=Rate(2, 1.0)),)
        real = store.ddb.transact_write_items
        raced: list[Any] = []

        def racing(**kwargs: Any) -> Any:
            if not raced:  # another worker's claim commits while this one is in flight
                raced.append(None)
                clock.advance(0.6)
                raced.extend(store.claim(1, 30, policy=ClaimPolicy(limits=limits)))
            return real(**kwargs)

        store.ddb.transact_write_items = racing
        got = store.claim(1, 30, policy=ClaimPolicy(limits=limits))
        store.ddb.transact_write_items = real
        assert len(raced) == 2 and len(got) == 1  # both took a job, 0.6 s after it began
        # 0.55 s after those two starts: both inside their 1 s window (and its 0.1 s margin)
        clock.advance(0.55)
        assert store.claim(1, 30, policy=ClaimPolicy(limits=limits)) == []
        clock.advance(0.6)  # past it
        assert len(store.claim(1, 30, policy=ClaimPolicy(limits=limits))) == 1
        store.close()
