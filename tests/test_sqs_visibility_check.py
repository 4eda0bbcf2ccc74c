"""SPOOL_SQS_VISIBILITY_TIMEOUT against the queue's own VisibilityTimeout.

The SQS worker keeps a running job's message hidden by extending it every third of
SPOOL_SQS_VISIBILITY_TIMEOUT. Nothing compared that setting with the queue: set
longer than the queue's timeout, the message reappeared (and its job was delivered
again) before the first extension. The worker now reads the queue's attribute once
per process, on its first batch, warns when the two disagree, and extends by the
shorter of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from tests.apikit import installed, settings_for
from tests.test_aws_events import (
    QUEUE,
    count_calls,
    enqueue,
    open_runtime,
    poller,
    state,
    store_of,
)

STORE_URL = f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1"  # as open_runtime's


def _queue_timeout(rt: Runtime, seconds: int) -> str:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    url = dispatch.queue_url
    dispatch.client.set_queue_attributes(
        QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)}
    )
    return url


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "VisibilityTimeout" in r.getMessage()
    ]


@pytest.fixture
def quiet_queue(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path, visibility=480) as rt:
        yield rt


def test_a_setting_longer_than_the_queues_timeout_warns_once_and_hides_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_aws(), open_runtime(tmp_path, visibility=480) as rt:
        url = _queue_timeout(rt, 2)
        dispatch = store_of(rt).dispatch
        assert dispatch is not None
        job_id = enqueue(rt, "sleep", payload={"seconds": 3.5})
        feeder = poller(rt)
        calls = count_calls(dispatch.client)
        results: list[Any] = []
        with caplog.at_level(logging.WARNING):
            worker = threading.Thread(target=lambda: results.append(feeder.poll_once()))
            worker.start()
            deadline = time.monotonic() + 20
            while state(rt, job_id) is not JobState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.05)  # the poller has received the message and started the job
            seen_again = 0
            while worker.is_alive() and time.monotonic() < deadline:
                again = dispatch.client.receive_message(QueueUrl=url, WaitTimeSeconds=0)
                seen_again += len(again.get("Messages", []))
                time.sleep(0.25)
            worker.join(30)
            second = enqueue(rt, "echo")
            assert feeder.poll_once().deleted == 1  # a second batch: no second read
        assert seen_again == 0, "the message reappeared while its job was running"
        assert results[0].deleted == 1 and state(rt, job_id) is JobState.SUCCEEDED
        assert state(rt, second) is JobState.SUCCEEDED
        assert calls["GetQueueAttributes"] == 1
        (warning,) = _warnings(caplog)
        assert "SPOOL_SQS_VISIBILITY_TIMEOUT=480" in warning
        assert "VisibilityTimeout is 2" in warning


def test_a_setting_that_agrees_with_the_queue_says_nothing(
    quiet_queue: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = enqueue(quiet_queue, "echo")
    with caplog.at_level(logging.WARNING):
        assert poller(quiet_queue).poll_once().deleted == 1
    assert state(quiet_queue, job_id) is JobState.SUCCEEDED
    assert _warnings(caplog) == []


def test_a_setting_shorter_than_the_queues_timeout_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_aws(), open_runtime(tmp_path, visibility=30) as rt:
        _queue_timeout(rt, 960)
        job_id = enqueue(rt, "echo")
        with caplog.at_level(logging.WARNING):
            assert poller(rt).poll_once().deleted == 1
        assert state(rt, job_id) is JobState.SUCCEEDED
        (warning,) = _warnings(caplog)
        assert "SPOOL_SQS_VISIBILITY_TIMEOUT=30" in warning and "is 960" in warning


def test_a_queue_whose_timeout_cannot_be_read_keeps_the_setting(
    quiet_queue: Runtime, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sqs:GetQueueAttributes (or SQS down): said once, the jobs still run."""
    dispatch = store_of(quiet_queue).dispatch
    assert dispatch is not None
    feeder = poller(quiet_queue)  # reads the queue's ARN itself, as Lambda knows it

    def refused(**_: Any) -> Any:
        raise RuntimeError("AccessDenied")

    monkeypatch.setattr(dispatch.client, "get_queue_attributes", refused)
    first, second = enqueue(quiet_queue, "echo"), enqueue(quiet_queue, "echo")
    with caplog.at_level(logging.WARNING):
        assert feeder.poll_once().deleted == 2
    assert state(quiet_queue, first) is state(quiet_queue, second) is JobState.SUCCEEDED
    (warning,) = _warnings(caplog)
    assert "could not read" in warning and "AccessDenied" in warning


def test_without_the_setting_the_queues_own_timeout_is_used_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset, the setting's 30 is SQS's default, not a claim about this queue (as
    handler_check reads it): the queue's own timeout is the one to keep, unsaid."""
    from chalicelib.storage import sqs_dispatch

    kept: list[int] = []
    original = sqs_dispatch.VisibilityHeartbeat.__init__

    def recording(self: Any, dispatch: Any, receipts: Any, timeout: int) -> None:
        kept.append(timeout)
        original(self, dispatch, receipts, timeout)

    monkeypatch.setattr(sqs_dispatch.VisibilityHeartbeat, "__init__", recording)
    settings = settings_for(tmp_path, store_url=STORE_URL)
    assert not settings.text("SPOOL_SQS_VISIBILITY_TIMEOUT")
    with mock_aws(), installed(settings) as rt:
        _queue_timeout(rt, 960)
        job_id = enqueue(rt, "echo")
        with caplog.at_level(logging.WARNING):
            assert poller(rt).poll_once().deleted == 1
        assert state(rt, job_id) is JobState.SUCCEEDED
    assert kept == [960]
    assert _warnings(caplog) == []
