"""The worker and scheduled functions handed odd events, as Lambda hands them
(`app.run_jobs(event, context)`, `app.drain_due(event, context)`), against DynamoDB
and SQS in moto.

SQS sends the worker a batch of records; a direct invocation (the console's test
event, a wrong trigger) can send anything. One record that cannot be read fails
alone: the batch's other jobs run, the answer's batchItemFailures names exactly the
records SQS should deliver again (never an empty or made-up id, which Lambda reads
as "the whole batch failed"), and the bad input is a WARNING, never an ERROR with a
traceback. A record that names no job is reported failed, so the queue's redrive
policy (maxReceiveCount 4, infra/generate.py) moves it to the dead-letter queue
instead of delivering it forever (docs/aws.md, "Messages").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

import app as spool_app
from chalicelib.ids import new_job_id
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.test_aws_events import enqueue, open_runtime, state


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def record(body: Any, message_id: Any = "m-bad", **fields: Any) -> dict[str, Any]:
    """An SQS record as Lambda's event source mapping builds it."""
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
        "awsRegion": "us-east-1",
        **fields,
    }


def without(name: str, **fields: Any) -> dict[str, Any]:
    given = record(json.dumps({"id": new_job_id()}), **fields)
    del given[name]
    return given


def clean_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The records that would page an operator: ERROR and above, or any traceback."""
    return [
        f"{r.name} {r.levelname} {r.getMessage()[:200]}"
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR
    ]


def run_jobs(event: Any) -> Any:
    return spool_app.app.handler_map["run_jobs"](event, context("run_jobs"))


# record (beside a good one) -> the message ids the answer must report failed
BAD_RECORDS: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "body missing": (lambda: without("body"), {"m-bad"}),
    "body null": (lambda: record(None), {"m-bad"}),
    "body a number": (lambda: record(5), {"m-bad"}),
    "body an object": (lambda: record({"id": new_job_id()}), {"m-bad"}),
    "body empty": (lambda: record(""), {"m-bad"}),
    "body not JSON": (lambda: record("{not json"), {"m-bad"}),
    "body JSON, a list": (lambda: record("[1, 2]"), {"m-bad"}),
    "body JSON, no id": (lambda: record('{"job": "x"}'), {"m-bad"}),
    "body JSON, id a number": (lambda: record('{"id": 5}'), {"m-bad"}),
    "body JSON, id not a job id": (lambda: record('{"id": "j_nope"}'), {"m-bad"}),
    "body JSON nested past the limit": (lambda: record("{" * 100_000), {"m-bad"}),
    "body huge": (lambda: record("x" * 262_144), {"m-bad"}),
    "messageId missing": (lambda: without("messageId"), set()),
    "messageId null, body bad": (lambda: record("junk", message_id=None), set()),
    "messageId a number, body bad": (lambda: record("junk", message_id=7), set()),
    "messageId empty, body bad": (lambda: record("junk", message_id=""), set()),
    "receiptHandle missing": (lambda: without("receiptHandle"), set()),
    "attributes missing": (lambda: without("attributes"), set()),
    "attributes null": (lambda: record(json.dumps({"id": new_job_id()}), attributes=None), set()),
    "eventSource unknown": (lambda: record("junk", eventSource="aws:kinesis"), set()),
    "eventSource a number": (lambda: record("junk", eventSource=5), set()),
    "a record that is a string": (lambda: "a record", set()),
    "a record that is null": (lambda: None, set()),
    "a record that is a list": (lambda: [record("junk")], set()),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_one_unreadable_record_fails_alone_and_is_a_warning(
    rt: Runtime, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    build, failed = BAD_RECORDS[case]
    good = enqueue(rt)
    event = {"Records": [build(), record(json.dumps({"id": good}), message_id="m-good")]}
    with caplog.at_level(logging.INFO):
        answer = run_jobs(event)
    assert {f["itemIdentifier"] for f in answer["batchItemFailures"]} == failed
    assert all(f["itemIdentifier"] for f in answer["batchItemFailures"])
    assert state(rt, good) is JobState.SUCCEEDED
    assert clean_logs(caplog) == []
    assert any(r.levelno == logging.WARNING for r in caplog.records), "bad input said nothing"


@pytest.mark.parametrize(
    "event",
    [None, "x", 5, [], [record("junk")], {}, {"Records": None}, {"Records": "x"}, {"Records": {}}],
    ids=repr,
)
def test_an_event_that_is_no_sqs_batch_is_a_warning_and_nothing_failed(
    rt: Runtime, event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = run_jobs(event)
    assert answer == {"batchItemFailures": []}
    assert clean_logs(caplog) == []
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_duplicate_message_ids_are_reported_once(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Lambda's answer names a message once; SQS never repeats an id in a batch, a
    hand-made event can."""
    good = enqueue(rt)
    event = {
        "Records": [
            record("junk", message_id="m-1"),
            record("more junk", message_id="m-1"),
            record(json.dumps({"id": good}), message_id="m-2"),
            record(json.dumps({"id": good}), message_id="m-2"),
        ]
    }
    with caplog.at_level(logging.INFO):
        answer = run_jobs(event)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert state(rt, good) is JobState.SUCCEEDED
    assert clean_logs(caplog) == []


def test_a_huge_batch_of_bad_records_is_answered_record_by_record(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Far past SQS's 10,000: every record reported, one WARNING each, no store call
    needed to tell them apart."""
    good = enqueue(rt)
    bad = [record(f"junk {i}", message_id=f"m-{i}") for i in range(12_000)]
    event = {"Records": [*bad, record(json.dumps({"id": good}), message_id="m-good")]}
    with caplog.at_level(logging.WARNING):
        answer = run_jobs(event)
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [
        f"m-{i}" for i in range(12_000)
    ]
    assert state(rt, good) is JobState.SUCCEEDED
    assert clean_logs(caplog) == []


# -- the scheduled function -------------------------------------------------------------


def _scheduled(**fields: Any) -> Callable[[], Any]:
    def build() -> Any:
        event = scheduled_event(spool_app.app)
        event.update(fields)
        return event

    return build


def _scheduled_without(name: str) -> Callable[[], Any]:
    def build() -> Any:
        event = scheduled_event(spool_app.app)
        del event[name]
        return event

    return build


ODD_SCHEDULES: dict[str, Callable[[], Any]] = {
    "an empty object": lambda: {},
    "null": lambda: None,
    "a list": lambda: [],
    "a string": lambda: "tick",
    "the console's test event": lambda: {"key1": "value1", "key2": "value2"},
    "an SQS batch": lambda: {"Records": [record("junk")]},
    "no detail-type": _scheduled_without("detail-type"),
    "no time": _scheduled_without("time"),
    "detail null": _scheduled(detail=None),
    "detail a string": _scheduled(detail="x"),
    "resources a string": _scheduled(resources="arn"),
}


@pytest.mark.parametrize("case", list(ODD_SCHEDULES))
def test_an_odd_event_to_the_scheduled_function_still_drains_with_a_warning(
    rt: Runtime, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its event carries nothing the drain reads: the rule's event was a KeyError in
    chalice (a Lambda error with a traceback) when a key was missing. An invocation
    by hand drains as the minute's rule would, and says it was not the rule's."""
    with caplog.at_level(logging.INFO):
        answer = spool_app.app.handler_map["drain_due"](ODD_SCHEDULES[case](), context("drain_due"))
    assert answer == {"released": 0, "periodic_enqueued": 0}
    assert clean_logs(caplog) == []
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not a scheduled event" in m for m in warned), warned


def test_the_rule_s_own_event_drains_without_a_warning(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = spool_app.app.handler_map["drain_due"](
            scheduled_event(spool_app.app), context("drain_due")
        )
    assert answer == {"released": 0, "periodic_enqueued": 0}
    assert [r.getMessage() for r in caplog.records if r.name == "spool.events"] == []
