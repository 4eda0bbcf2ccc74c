"""Every queue and object action a Lambda role is granted is one its function calls.

tests/test_iam_actions.py checks that each call a function makes is allowed, and that
each *table* action granted is used. The queue's and the bucket's grants went
unchecked the other way, and the SQS worker's role held s3:DeleteObject on Spool's
objects, which no code path of the worker calls (only an enqueue's rollback and the
dashboard's purge of dead jobs delete objects: the API's, and a periodic tick's
enqueue in the scheduled function). The worker runs tenants' handlers on tenants'
input (resize_image decodes their images): code run there through a flaw could have
deleted every job's offloaded payload and result. The same walk as test_iam_actions
drives each function's work against moto; a grant it never calls must be named here
with the path that calls it, or removed from infra/generate.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

import app as spool_app
from chalicelib import periodic
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from infra.generate import ACTIONS
from local.emulator import context, scheduled_event
from tests.apikit import Api, installed, settings_for
from tests.test_aws_events import QUEUE, poller
from tests.test_iam_actions import (  # noqa: F401 (fixtures)
    Recorder,
    _allowed,
    _role,
    recorder,
    rt,
    walk_every_function,
)

# Queue and object actions a role is granted for paths the walk does not take, each
# with the path that calls it.
UNWALKED: dict[str, dict[str, str]] = {
    "api": {
        "sqs:GetQueueAttributes": "/health's probe of a queue that lost a send "
        "(SqsDispatch.still_failing; tests/test_attack_s62D_health_probe.py)",
    },
    "worker": {
        "sqs:ChangeMessageVisibility": "the visibility heartbeat of a long batch; a "
        "deferred job's message handed back (events.handle_sqs)",
        "sqs:GetQueueUrl": "the queue's URL from its name, once per container "
        "(SqsDispatch.queue_url; the walk's runtime resolved it as the API)",
        "sqs:SendMessage": "a retry's backoff message; a deferred or held job's new one",
    },
    "scheduler": {
        "sqs:GetQueueUrl": "the queue's URL from its name, once per container",
        "sqs:SendMessage": "release_due sending a due or lost job's message",
        "s3:GetObject": "a webhook delivery reading its job's offloaded result",
        "s3:PutObject": "a periodic tick's payload past offload_bytes (SPOOL_SCHEDULES)",
        "s3:DeleteObject": "that tick's add dropping the payload no job record names",
    },
}


def test_each_queue_and_object_grant_is_called_or_named(
    rt: Runtime,  # noqa: F811 (the fixture)
    recorder: Recorder,  # noqa: F811 (the fixture)
    api: Api,
) -> None:
    walk_every_function(rt, api, recorder)
    with recorder.acting_as(_role("api_handler")):
        # A dead job whose payload is in S3, purged from the dashboard: the API deletes.
        dead = api.enqueue(
            {
                "type": "fail",
                "payload": {"always": True, "message": "x" * 150_000},
                "max_attempts": 1,
            }
        )
    with recorder.acting_as(_role("run_jobs")):
        poller(rt).poll_once()
    with recorder.acting_as(_role("api_handler")):
        assert api.get(f"/status/{dead}").json["state"] == "dead"
        assert api.post("/ui/api/dead/purge", {"ids": [dead]}).status == 200
    unused = {
        role: sorted(
            action
            for kind in ("queue", "objects")
            for action in ACTIONS[role].get(kind, [])
            if (action.split(":", 1)[0], action) not in recorder.calls.get(role, set())
        )
        for role in ("api", "worker", "scheduler")
    }
    assert unused == {role: sorted(UNWALKED[role]) for role in unused}


def test_the_paths_named_are_granted() -> None:
    """The list above stays honest: nothing named there is missing from the role."""
    for role, named in UNWALKED.items():
        granted = {a for kind in ("queue", "objects") for a in ACTIONS[role].get(kind, [])}
        assert set(named) <= granted, role


BIG_TICK = {
    "name": "big-tick",
    "type": "echo",
    "cron": "* * * * *",
    "payload": {"blob": "x" * 150_000},  # past offload_bytes: the tick's payload goes to S3
}


@pytest.fixture
def scheduled(tmp_path: Path) -> Iterator[Runtime]:
    """A store with a periodic schedule whose payload is offloaded (SPOOL_SCHEDULES)."""
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1",
        extra={"SPOOL_SQS_VISIBILITY_TIMEOUT": "30", "SPOOL_SCHEDULES": json.dumps([BIG_TICK])},
    )
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def test_a_periodic_tick_fired_twice_by_the_schedule_is_within_its_role(
    scheduled: Runtime,
    recorder: Recorder,  # noqa: F811 (the fixture)
) -> None:
    """The walk above sets no schedule; the scheduled function's tick is an enqueue of
    its own (payload offloaded, key `periodic:<name>:<tick>`), and a second container
    that fires the same tick finds the key taken and drops the payload it put."""
    handler = spool_app.app.handler_map["drain_due"]
    with recorder.acting_as(_role("drain_due")):
        handler(scheduled_event(spool_app.app), context("drain_due", 20_000))
        periodic._confirmed_by_store.clear()  # a second container: nothing settled
        handler(scheduled_event(spool_app.app), context("drain_due", 20_000))
    ticks = scheduled.store.list_jobs(JobQuery(tenant=None, type="echo"))
    assert len(ticks.jobs) == 1, ticks
    calls = recorder.calls["scheduler"]
    assert {("s3", "s3:PutObject"), ("s3", "s3:DeleteObject")} <= calls, calls
    assert sorted(a for s, a in calls if a.split(":", 1)[1] not in _allowed("scheduler", s)) == []
