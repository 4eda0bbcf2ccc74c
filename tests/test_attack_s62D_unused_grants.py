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

from chalicelib.runtime import Runtime
from infra.generate import ACTIONS
from tests.apikit import Api
from tests.test_aws_events import poller
from tests.test_iam_actions import (  # noqa: F401 (fixtures)
    Recorder,
    _role,
    recorder,
    rt,
    walk_every_function,
)

# Queue and object actions a role is granted for paths the walk does not take, each
# with the path that calls it.
UNWALKED: dict[str, dict[str, str]] = {
    "api": {},
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
