"""A bulk redrive with no dead job to move answers "nothing redriven", full backlog or not.

Found from outside (stop 62): `spool serve` with SPOOL_TENANT_LIMITS {"*": {"backlog": 1}},
a tenant with one delayed job waiting (its backlog full) and no dead job at all. `spool
dlq list` said "0 dead job(s)", and `spool dlq redrive --all` failed (exit 1) with
"tenant backlog is full: 1 jobs waiting, at most 1; retry when some have run". POST
/dlq/redrive and the dashboard's {"all": true} were both 429 with a Retry-After. No wait
could change that answer: the room was asked for before anything was looked up, so the
client was told to retry a redrive that had nothing to move. The named form already
counted only the tenant's dead jobs among the ids (s51f); the bulk forms now look for
one dead job (of the filter's queue and type) first, and answer 200 with none moved
when there is none.
"""

from __future__ import annotations

import json

import pytest

from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, Api
from tests.test_limits_api import dead_jobs, limited, states

assert limited  # the fixture, imported for the tests below

FULL_AT_ONE = {"SPOOL_TENANT_LIMITS": json.dumps({"*": {"backlog": 1}})}


@pytest.mark.parametrize("limited", [FULL_AT_ONE], indirect=True)
def test_a_bulk_redrive_with_nothing_dead_is_200_with_none_moved(
    limited: tuple[Api, Runtime],
) -> None:
    api, _ = limited
    assert api.enqueue({"type": "echo", "delay": 600})  # the backlog is full now
    reply = api.post("/dlq/redrive")
    assert reply.status == 200, reply.body
    assert reply.json["redriven"] == 0 and reply.json["ids"] == []
    assert reply.json["died_before"]  # the bound is still echoed, for a second call
    ui = api.post("/ui/api/dead/redrive", {"all": True})
    assert ui.status == 200 and ui.json == {"done": 0, "ids": [], "more": False}, ui.body


@pytest.mark.parametrize("limited", [FULL_AT_ONE], indirect=True)
def test_another_tenants_dead_jobs_are_not_something_to_redrive(
    limited: tuple[Api, Runtime],
) -> None:
    """The look is the tenant's own: tenant A's dead job makes B's bulk redrive no 429,
    and B's answer is the one B gets with no dead job anywhere."""
    api, rt = limited
    [theirs] = dead_jobs(rt, 1)  # tenant A's
    assert api.enqueue({"type": "echo", "delay": 600}, key=KEY_B)  # B's backlog full
    reply = api.post("/dlq/redrive", key=KEY_B)
    assert reply.status == 200 and reply.json["redriven"] == 0, reply.body
    assert states(rt, [theirs]) == ["dead"]


@pytest.mark.parametrize("limited", [FULL_AT_ONE], indirect=True)
def test_a_dead_job_with_a_full_backlog_is_still_429(limited: tuple[Api, Runtime]) -> None:
    """Unchanged: with something to move and no room, the answer says to wait."""
    api, rt = limited
    [mine] = dead_jobs(rt, 1)
    assert api.enqueue({"type": "echo", "delay": 600})
    assert api.post("/dlq/redrive").status == 429
    assert api.post("/ui/api/dead/redrive", {"all": True}).status == 429
    assert states(rt, [mine]) == ["dead"]


@pytest.mark.parametrize("limited", [FULL_AT_ONE], indirect=True)
def test_the_filter_decides_what_there_is_to_move(limited: tuple[Api, Runtime]) -> None:
    """A dead job of another queue is not one this filter would move."""
    api, rt = limited
    dead_jobs(rt, 1)  # in the default queue
    assert api.enqueue({"type": "echo", "delay": 600})
    reply = api.post("/dlq/redrive", {"queue": "elsewhere"})
    assert reply.status == 200 and reply.json["redriven"] == 0, reply.body
    ui = api.post("/ui/api/dead/redrive", {"all": True, "queue": "elsewhere"})
    assert ui.status == 200 and ui.json["done"] == 0, ui.body


@pytest.mark.parametrize("limited", [FULL_AT_ONE], indirect=True)
def test_a_listing_stopped_at_its_scan_budget_is_not_nothing_dead(
    limited: tuple[Api, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's filtered listing answers an empty page with a cursor when it has looked
    through its budget of rows: a dead job of the filter may lie beyond, so that is no
    "none to move", and a full backlog is still the 429."""
    from chalicelib.service import EnqueueRequest
    from chalicelib.storage import sqlite_lists
    from tests.apikit import TENANT_A

    api, rt = limited
    monkeypatch.setattr(sqlite_lists, "SCAN_BOUND", 2)
    dead_jobs(rt, 3)  # the default queue's, first in the listing
    late = EnqueueRequest(type="fail", payload={"always": True}, max_attempts=1, queue="late")
    [beyond] = [result.job.id for result in rt.service.enqueue([late], TENANT_A)]
    assert rt.worker().drain().dead == 1
    assert api.enqueue({"type": "echo", "delay": 600})  # full
    assert api.post("/dlq/redrive", {"queue": "late"}).status == 429
    assert api.post("/ui/api/dead/redrive", {"all": True, "queue": "late"}).status == 429
    assert states(rt, [beyond]) == ["dead"]
