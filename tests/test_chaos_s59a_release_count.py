"""The scheduled release counts the jobs it reaped and sent again.

Found in stop 59 with a DynamoStore on moto_server: a worker killed mid-job leaves its
lease to expire, and the next scheduled run reaps the job and sends its id again,
but `release_due` answered 0, so the scheduled function reported {"released": 0}
and the local poller logged nothing for that minute, as if no job had moved. The
count now includes the reaped jobs whose ids went to the queue (not one the reap
buried at its last attempt: nothing was sent for it).

moto_server is a real process; the store's clock is a FakeClock, so a lease expires
without waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.storage.dynamodb import DynamoConfig, DynamoStore
from tests.factories import new_job
from tests.moto_proc import moto_server

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]

LEASE = 30.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DynamoStore]:
    with moto_server(tmp_path / "moto.log") as moto:
        url = f"dynamodb://jobs?queue=jobs&create=1&endpoint={moto.endpoint}"
        yield DynamoStore(DynamoConfig.from_url(url), FakeClock())


def drain_queue(store: DynamoStore) -> list[str]:
    """Receive (and delete) every visible message; their bodies."""
    dispatch = store.dispatch
    assert dispatch is not None
    bodies: list[str] = []
    for _ in range(20):  # bounded: a handful of messages at most
        got = dispatch.client.receive_message(
            QueueUrl=dispatch.queue_url, MaxNumberOfMessages=10
        ).get("Messages", [])
        if not got:
            return bodies
        for message in got:
            bodies.append(message["Body"])
            dispatch.client.delete_message(
                QueueUrl=dispatch.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    raise AssertionError("the queue kept answering messages")


def test_the_release_counts_the_jobs_it_reaped_and_sent(store: DynamoStore) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    retried = new_job(clock, max_attempts=3)
    buried = new_job(clock, max_attempts=1)
    store.add([retried, buried])
    assert store.claim(2, LEASE) and sorted(drain_queue(store)) == sorted([retried.id, buried.id])
    clock.advance(LEASE + 1)  # the worker died: both leases expire
    assert store.release_due() == 1  # the retried job's id went out again
    assert drain_queue(store) == [retried.id]
    states = {j: store.get(j) for j in (retried.id, buried.id)}
    assert states[retried.id] is not None and states[retried.id].state is JobState.RETRYING  # type: ignore[union-attr]
    assert states[buried.id] is not None and states[buried.id].state is JobState.DEAD  # type: ignore[union-attr]
    assert store.release_due() == 0  # nothing left to send
