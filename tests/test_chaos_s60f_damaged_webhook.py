"""A webhook of a job whose stored record cannot be read fails at once, saying why.

Was (store level against SQLite and Redis, a real loopback receiver): the delivery
read the job to build its body, the read raised JobUnreadable, and the deliverer took
it for a store outage: no outcome recorded, the delivery claimed again each time its
lease ran out, until its last attempt failed it "gave up after N attempts:
JobUnreadable ...", with a store-unavailable warning at each. The damage does not
pass with time: now the first attempt fails it, its last_error naming the damage
and what to do, and nothing is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.webhooks.deliver import Deliverer
from tests.backends import open_backend
from tests.factories import new_job, token
from tests.test_chaos_s60b_unreadable_rows import write
from tests.test_webhook_deliver import settings
from tests.webhook_receiver import Receiver

DAMAGE: dict[str, tuple[str, str | None]] = {
    "sqlite": ("created_at", "yesterday"),
    "redis": ("created_at", None),
}


@pytest.mark.parametrize("backend", sorted(DAMAGE))
def test_the_first_attempt_fails_it_naming_the_damage(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    receiver: Receiver,
    backend: str,
) -> None:
    with open_backend(backend, clock, tmp_path, request) as s:
        store: Any = s
        job = store.add([new_job(clock, tenant="acme", callback_url=receiver.url)])[0].job
        [running] = store.claim(1, 30)
        store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result={"n": 1})])
        field, value = DAMAGE[backend]
        write(backend, store, job.id, field, value)
        Deliverer(store, settings()).drain()
        [d] = store.webhooks(job.id)
        assert d.state == "failed" and d.attempts == 1, d
        assert d.last_error is not None
        assert d.last_error.startswith("not sent: the job's stored record cannot be read ("), d
        assert receiver.requests == []
