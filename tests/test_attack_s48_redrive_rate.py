"""A redrive takes from the tenant's enqueue rate, one token per job moved.

Was: the backlog quota held redrives (stop 46), the enqueue rate did not. A tenant
held to 3 jobs an hour (SPOOL_TENANT_LIMITS rate/burst) and no backlog quota
enqueued failing jobs within its rate, let them die, and redrove them all at once,
again and again: each redrive put every dead job back to work (the workers' load
the rate is there to bound), with no token taken. Found by counting what
`POST /dlq/redrive` moved with the tenant's bucket empty: all of them.

Now every redrive route (`/dlq/{id}/redrive`, `/dlq/redrive`, the dashboard's two)
takes a token per job it moves, before it moves any, in the service's one redrive
step (Service.redrive_ids), so every store gets it: an empty bucket is 429 with
Retry-After and nothing moved; a bulk redrive moves at most the burst; named jobs
more than the burst are 413 ("split it"), as a batch is.
"""

from __future__ import annotations

import pytest

from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, Api
from tests.test_limits_api import TENANT_RATE as RATE
from tests.test_limits_api import dead_jobs, every_redrive_route, limited, states

assert limited  # the fixture, imported for the tests below


@pytest.mark.parametrize("limited", [RATE], indirect=True)
def test_an_empty_bucket_refuses_every_redrive_route_and_moves_nothing(
    limited: tuple[Api, Runtime],
) -> None:
    api, rt = limited
    dead = dead_jobs(rt, 4)
    for _ in range(3):  # the burst, spent
        api.enqueue({"type": "echo", "delay": 600})
    refused = every_redrive_route(api, dead[0])
    for reply in refused:
        assert reply.status == 429 and reply.error_code == "rate_limited", reply.body
        # Until the tokens its jobs take are back: an hour a job (a bulk one, three).
        assert int(reply.header("Retry-After") or 0) >= 3000, reply.body
    assert states(rt, dead) == ["dead"] * 4
    # Another tenant's bucket is its own.
    assert api.post("/dlq/redrive", key=KEY_B).status == 200


@pytest.mark.parametrize("limited", [RATE], indirect=True)
def test_a_bulk_redrive_moves_at_most_the_burst_and_each_job_takes_a_token(
    limited: tuple[Api, Runtime],
) -> None:
    api, rt = limited
    dead = dead_jobs(rt, 5)
    # Named jobs more than the burst could never pass: 413, as a batch is.
    too_many = api.post("/ui/api/dead/redrive", {"ids": dead[:4]})
    assert too_many.status == 413, too_many.body
    assert too_many.json["error"]["details"] == {"jobs": 4, "burst": 3}
    bulk = api.post("/dlq/redrive")
    assert bulk.status == 200 and bulk.json["redriven"] == 3, bulk.body
    assert sorted(states(rt, dead)) == ["dead"] * 2 + ["queued"] * 3
    over = api.post("/dlq/redrive")
    assert over.status == 429 and over.header("Retry-After"), over.body
    assert api.post("/enqueue", {"type": "echo"}).status == 429
    assert sorted(states(rt, dead)) == ["dead"] * 2 + ["queued"] * 3


@pytest.mark.parametrize("limited", [RATE], indirect=True)
def test_a_redrive_of_one_job_takes_one_token(limited: tuple[Api, Runtime]) -> None:
    api, rt = limited
    dead = dead_jobs(rt, 1)
    assert api.post(f"/dlq/{dead[0]}/redrive").status == 200
    for _ in range(2):
        assert api.post("/enqueue", {"type": "echo", "delay": 600}).status == 201
    assert api.post("/enqueue", {"type": "echo"}).status == 429
