"""How long a job a limit held back waits on the SQS path before its new message
comes back (chalicelib/events.py), through app.py's SQS handler against DynamoDB
and SQS in moto, as tests/test_limits_sqs.py.

A held message always came back after 2 s, whatever the limit: under "1/h" one
held job was received and refused about 1,800 times an hour, and 1,000 held jobs
made about 500 receives a second, competing with runnable jobs for the worker's
concurrency and each an SQS request. Now a job a rate held comes back about when
the rate's window has room again (at most SQS's 900 s), and one a concurrency
limit held comes back later each time it is held (2 s doubling, with jitter,
capped at events.CONCURRENCY_HOLD_CAP)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib import events
from chalicelib.limits import Hold, Rate, rate_wait
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.sqs_dispatch import MAX_DELAY_SECONDS, body_for, delay_for
from tests.apikit import installed, settings_for
from tests.test_aws_events import QUEUE, enqueue, poller, state, store_of


@contextmanager
def limited(tmp_path: Path, limit: dict[str, Any]) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1",
        extra={"SPOOL_LIMITS": json.dumps({"type:echo": limit})},
    )
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def spy_sends(rt: Runtime) -> list[tuple[str, float, int]]:
    """Every (job id, delay, holds so far) the store's dispatch sends from now on."""
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    real = dispatch.send_held
    sent: list[tuple[str, float, int]] = []

    def send_held(items: Sequence[tuple[str, float, int]]) -> list[str]:
        sent.extend(items)
        return real(items)

    dispatch.send_held = send_held  # type: ignore[method-assign]
    return sent


def held_delay(held: str, sent: list[tuple[str, float, int]]) -> int:
    """The SQS DelaySeconds the held job's new message went out with."""
    [delay] = [d for job_id, d, _ in sent if job_id == held]
    return delay_for(delay)


@pytest.mark.parametrize(
    ("rate", "low", "high"),
    [("1/h", MAX_DELAY_SECONDS, MAX_DELAY_SECONDS), ("1/m", 58, 70)],
)
def test_a_rate_held_job_comes_back_when_the_rate_has_room(
    tmp_path: Path, rate: str, low: int, high: int
) -> None:
    with limited(tmp_path, {"rate": rate}) as rt:
        ids = [enqueue(rt, payload={"i": i}) for i in range(2)]
        sent = spy_sends(rt)
        batch = poller(rt).poll_once()
        assert (batch.received, batch.deleted, batch.failed) == (2, 2, 0)
        [held] = [i for i in ids if state(rt, i) is JobState.QUEUED]
        assert low <= held_delay(held, sent) <= high


def deliver(job_id: str, holds: int) -> dict[str, Any]:
    """What Lambda hands the SQS handler for one message naming `job_id`, held `holds`
    times before (a fresh message is the bare id)."""
    body = json.dumps({"id": job_id, "holds": holds}) if holds else job_id
    record = {"messageId": f"m{holds}", "body": body, "eventSource": "aws:sqs"}
    return events.handle_sqs({"Records": [record]}, None)


def test_a_concurrency_held_job_waits_longer_each_time_it_is_held(tmp_path: Path) -> None:
    with limited(tmp_path, {"concurrency": 1}) as rt:
        running, waiting = enqueue(rt), enqueue(rt)
        policy = events.worker_for(rt).config.policy
        [job] = rt.store.claim(1, 300, ids=[running], policy=policy)  # the one slot, taken
        sent = spy_sends(rt)
        for holds in range(12):
            assert deliver(waiting, holds) == {"batchItemFailures": []}
            assert state(rt, waiting) is JobState.QUEUED
        assert [h for _, _, h in sent] == list(range(1, 13))  # each new message counts one more
        delays = [delay_for(d) for _, d, _ in sent]
        for holds, delay in enumerate(delays):
            full = min(events.CONCURRENCY_HOLD_CAP, events.HELD_REDELIVERY_SECONDS * 2**holds)
            assert full / 2 <= delay <= full, (holds, delays)
        assert max(delays) <= events.CONCURRENCY_HOLD_CAP < MAX_DELAY_SECONDS
        assert min(delays) >= 1  # never 0: that was a busy loop on the queue
        del job


def test_a_rate_wait_is_when_enough_of_the_oldest_starts_have_left() -> None:
    rate = Rate(3, 30.0)
    assert rate_wait([(20.0, 1), (10.0, 1), (25.0, 1)], 0, rate) == 10.0  # the oldest leaves
    assert rate_wait([(10.0, 1), (20.0, 1)], 1, rate) == 10.0  # one taken now fills it
    assert rate_wait([(10.0, 2), (20.0, 2)], 0, rate) == 10.0  # two leave together at 10
    assert rate_wait([(10.0, 1), (20.0, 1), (30.0, 1)], 0, Rate(2, 30.0)) == 20.0  # two must
    assert rate_wait([], 3, rate) == rate.window  # all taken now: a window from now
    assert rate_wait([(-0.5, 3)], 0, rate) == 0.0  # never below zero


def test_a_held_message_carries_its_hold_count_and_still_names_its_job() -> None:
    job_id = "j_" + "0" * 32
    assert body_for(job_id, 0) == job_id  # a fresh message stays the bare id
    assert events.message_job_id(body_for(job_id, 3)) == job_id
    assert events.message_holds(body_for(job_id, 3)) == 3
    for holds in ("-1", '"2"', "true", "1.5", "null"):
        body = f'{{"id": "{job_id}", "holds": {holds}}}'
        assert events.message_holds(body) == 0, holds  # a count that is none counts none
    assert events.message_holds(job_id) == 0
    assert events.message_holds("[1]") == 0


def test_a_held_delay_is_never_zero_nor_past_the_caps() -> None:
    rate_hold = Hold("j", "type:echo", "rate", wait=0.0)
    for jitter in (0.0, 1.0):
        fixed = lambda: jitter  # noqa: E731, B023 - called within the iteration
        # A rate with room within a second: still 2 s (and a tenth), as before, since
        # under a fast rate a backlog's held jobs are mostly held again.
        floor = events.HELD_REDELIVERY_SECONDS
        assert events.held_delay(rate_hold, 0, fixed) == pytest.approx(floor * (1 + jitter / 10))
        assert events.held_delay(Hold("j", "k", "rate", wait=1e9), 0, fixed) == 900
        assert events.held_delay(None, 0, fixed) >= 1.0
        assert events.held_delay(None, 10**6, fixed) <= events.CONCURRENCY_HOLD_CAP
