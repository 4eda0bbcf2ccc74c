"""Enqueue tokens a request took come back when the store stores none of its jobs
(refused for a full backlog) or finds them already stored (a raced repeat).

The edge counts a tenant's waiting jobs, takes the request's tokens from the shared
bucket, then stores the jobs; the store counts the backlog again in the insert's own
step, since another API process may have filled it in between. A request refused
there stored nothing, but kept its tokens: under `spool serve --processes 2` on
Postgres (rate "1/h", burst 60, backlog 5; 60 single enqueues at once, five rounds)
each round stored 5 jobs and left 54 tokens instead of 55 (helper n, stop 56). With
more processes, or a tenant pressing at its cap, every such refusal drained the rate
the tenant had paid for nothing, and later enqueues got 429 "rate limit" while the
bucket should have held room.

The edge's count is made to miss the waiting job here (as it misses another
process's that commits just after it read), so the store is the one that refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from tests.apikit import TENANT_A, Api, installed, settings_for
from tests.pg_support import sqlite_or_postgres

LIMITS = {"SPOOL_TENANT_LIMITS": json.dumps({TENANT_A: {"rate": "1/h", "burst": 3, "backlog": 1}})}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_store_refusal_for_the_backlog_spends_no_enqueue_token(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.api.throttle import EnqueueGate

    with (
        sqlite_or_postgres(backend, tmp_path) as url,
        installed(settings_for(tmp_path, store_url=url, extra=LIMITS)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        api = Api(client)
        first = api.enqueue({"type": "echo", "delay": 600})  # one token spent, 2 left
        real_waiting = EnqueueGate._waiting
        monkeypatch.setattr(EnqueueGate, "_waiting", lambda self, tenant: 0)
        for body in (
            {"type": "echo"},
            {"type": "echo", "idempotency_key": "k"},
            {"type": "echo"},
        ):
            over = api.post("/enqueue", body)
            assert over.status == 429 and over.header("Retry-After"), over.body
            assert "backlog is full" in over.json["error"]["message"], over.body
        monkeypatch.setattr(EnqueueGate, "_waiting", real_waiting)
        # The two tokens left before the refusals are still there: with room made
        # each time, two enqueues pass; a third finds the bucket empty.
        rt.store.cancel(first, TENANT_A)
        rt.store.cancel(api.enqueue({"type": "echo", "delay": 600}), TENANT_A)
        rt.store.cancel(api.enqueue({"type": "echo", "delay": 600}), TENANT_A)
        empty = api.post("/enqueue", {"type": "echo", "delay": 600})
        assert empty.status == 429 and "enqueue rate limit" in empty.json["error"]["message"]


REPEAT_LIMITS = [
    {TENANT_A: {"rate": "1/h", "burst": 3}},
    {TENANT_A: {"rate": "1/h", "burst": 3, "backlog": 10}},
]


@pytest.mark.parametrize("limits", REPEAT_LIMITS, ids=["rate", "rate-and-backlog"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_repeat_that_raced_its_first_request_gives_its_token_back(
    backend: str, limits: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same idempotency key sent to two API processes at once (a client retrying
    while its first request is still under way): both find the key unstored and take
    a token, one stores the job and the other is answered the job as a repeat (200).
    A repeat spends no token, so that one goes back (30 such requests at once under
    `--processes 2` on Postgres left 58 tokens of 60, not 59)."""
    from chalicelib.api.throttle import EnqueueGate

    extra = {"SPOOL_TENANT_LIMITS": json.dumps(limits)}
    with (
        sqlite_or_postgres(backend, tmp_path) as url,
        installed(settings_for(tmp_path, store_url=url, extra=extra)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        api = Api(client)
        job = {"type": "echo", "idempotency_key": "k", "delay": 600}
        first = api.enqueue(job)  # one token spent, 2 left
        real_fresh = EnqueueGate._fresh
        monkeypatch.setattr(EnqueueGate, "_fresh", lambda self, tenant, keys: len(keys))
        for body in (job, {"jobs": [job, {"type": "echo", "delay": 600}]}):
            again = api.post("/enqueue", body)
            assert again.status in (200, 201), again.body
            ids = (
                [again.json["id"]] if "id" in again.json else [j["id"] for j in again.json["jobs"]]
            )
            assert ids[0] == first
        monkeypatch.setattr(EnqueueGate, "_fresh", real_fresh)
        # The batch's new job took the one token it needed: one left.
        assert api.post("/enqueue", {"type": "echo", "delay": 600}).status == 201
        empty = api.post("/enqueue", {"type": "echo", "delay": 600})
        assert empty.status == 429 and "enqueue rate limit" in empty.json["error"]["message"]
