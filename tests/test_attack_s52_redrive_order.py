"""A single job's redrive says what is wrong with the job before what is wrong with
the tenant's backlog.

Was: with the backlog full, redriving a job that is not dead (queued, succeeded),
unknown, or another tenant's answered 429 "backlog is full" with a Retry-After; a
client that waited as told then got the 409 or 404 it could have had at once, and a
probe learned nothing either way. The job is read first now: 404 or 409 whatever the
backlog, and only a dead job of the tenant's meets the quota's 429.
"""

from __future__ import annotations

import pytest

from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, Api
from tests.test_limits_api import BACKLOG, dead_jobs, limited, states

assert limited  # the fixture, imported for the tests below

ROUTES = ("/dlq/{}/redrive", "/ui/api/jobs/{}/redrive")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("limited", [BACKLOG], indirect=True)
def test_a_job_that_cannot_be_redriven_is_404_or_409_with_the_backlog_full(
    limited: tuple[Api, Runtime], route: str
) -> None:
    api, rt = limited
    [dead] = dead_jobs(rt, 1)
    done = api.enqueue({"type": "echo", "payload": {}})
    assert rt.worker().drain().succeeded == 1
    waiting = [api.enqueue({"type": "echo", "delay": 600}) for _ in range(2)]  # full
    theirs = api.enqueue({"type": "echo", "payload": {}}, key=KEY_B)
    for job_id, status in (
        (waiting[0], 409),  # queued
        (done, 409),  # succeeded
        ("j_" + "0" * 32, 404),  # no such job
        (theirs, 404),  # another tenant's: not there, for this one
    ):
        reply = api.post(route.format(job_id))
        assert reply.status == status, (job_id, reply.body)
        assert reply.header("Retry-After") is None
    # A dead job of the tenant's still meets the quota.
    full = api.post(route.format(dead))
    assert full.status == 429 and "backlog" in full.json["error"]["message"], full.body
    assert states(rt, [dead, *waiting]) == ["dead", "queued", "queued"]
