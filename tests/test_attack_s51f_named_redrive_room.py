"""The dashboard's redrive of named jobs counts what would move (review s51, helper f).

The backlog's room (and the burst) were checked against the number of ids named, not
the tenant's dead jobs among them: with room for one, a list of one dead job and two
typos was refused 429, and a list longer than the backlog 413, though one job would
move. Now the check counts the tenant's dead jobs named; another tenant's id counts
as a typo does, so the answer says nothing of whether it exists."""

from __future__ import annotations

import json

import pytest

from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, TENANT_A, Api
from tests.test_limits_api import dead_jobs, limited, states

assert limited  # the fixture, imported for the tests below

ROOM_FOR_ONE = {"SPOOL_TENANT_LIMITS": json.dumps({TENANT_A: {"backlog": 2}})}
BURST_OF_ONE = {"SPOOL_TENANT_LIMITS": json.dumps({"*": {"rate": "1/h", "burst": 1}})}
TYPO, OTHER_TYPO = "j_" + "f" * 32, "j_" + "e" * 32


@pytest.mark.parametrize("limited", [ROOM_FOR_ONE], indirect=True)
def test_one_dead_job_and_two_typos_fit_a_room_of_one(limited: tuple[Api, Runtime]) -> None:
    api, rt = limited
    [mine, second] = dead_jobs(rt, 2)
    assert api.enqueue({"type": "echo", "delay": 600})  # 1 waiting of 2: room for one
    reply = api.post("/ui/api/dead/redrive", {"ids": [mine, TYPO, OTHER_TYPO]})
    assert reply.status == 200 and reply.json["ids"] == [mine], reply.body
    assert states(rt, [mine, second]) == ["queued", "dead"]


@pytest.mark.parametrize("limited", [ROOM_FOR_ONE], indirect=True)
def test_another_tenant_s_id_counts_as_a_typo_does(limited: tuple[Api, Runtime]) -> None:
    api, rt = limited
    [mine, again] = dead_jobs(rt, 2)
    theirs = api.enqueue({"type": "echo", "delay": 600}, key=KEY_B)
    assert api.enqueue({"type": "echo", "delay": 600})  # room for one
    with_theirs = api.post("/ui/api/dead/redrive", {"ids": [mine, theirs]})
    assert with_theirs.status == 200 and with_theirs.json["ids"] == [mine], with_theirs.body
    # Full now: a list naming their job is refused exactly as one naming a typo.
    a = api.post("/ui/api/dead/redrive", {"ids": [again, theirs]})
    b = api.post("/ui/api/dead/redrive", {"ids": [again, TYPO]})
    assert (a.status, a.json) == (b.status, b.json) and a.status == 429, (a.body, b.body)


@pytest.mark.parametrize("limited", [ROOM_FOR_ONE], indirect=True)
def test_two_named_dead_jobs_still_need_room_for_two(limited: tuple[Api, Runtime]) -> None:
    api, rt = limited
    dead = dead_jobs(rt, 2)
    assert api.enqueue({"type": "echo", "delay": 600})
    reply = api.post("/ui/api/dead/redrive", {"ids": [*dead, TYPO]})
    assert reply.status == 429, reply.body
    assert states(rt, dead) == ["dead", "dead"]


@pytest.mark.parametrize("limited", [BURST_OF_ONE], indirect=True)
def test_a_burst_of_one_redrives_one_dead_job_named_beside_typos(
    limited: tuple[Api, Runtime],
) -> None:
    api, rt = limited
    [mine] = dead_jobs(rt, 1)
    reply = api.post("/ui/api/dead/redrive", {"ids": [TYPO, mine, OTHER_TYPO]})
    assert reply.status == 200 and reply.json["ids"] == [mine], reply.body
