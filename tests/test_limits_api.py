"""The HTTP edge's limits: per-tenant enqueue rate and backlog, failed sign-ins
(chalicelib/api/throttle.py), through app.py as the Lambda path sees it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, TENANT_A, Api, Reply, installed, settings_for


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Api, Runtime]]:
    extra = request.param
    with (
        installed(settings_for(tmp_path, extra=extra)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client), rt


def stored(rt: Runtime, tenant: str = TENANT_A) -> int:
    return len(rt.store.list_jobs(JobQuery(tenant=tenant, limit=1000)).jobs)


TENANT_RATE = {"SPOOL_TENANT_LIMITS": json.dumps({"*": {"rate": "1/h", "burst": 3}})}


@pytest.mark.parametrize("limited", [TENANT_RATE], indirect=True)
def test_enqueue_rate_per_tenant_refuses_with_retry_after_and_stores_nothing(
    limited: tuple[Api, Runtime],
) -> None:
    api, rt = limited
    for n in range(3):
        assert api.post("/enqueue", {"type": "echo", "payload": {"n": n}}).status == 201
    over = api.post("/enqueue", {"type": "echo", "payload": {"n": 9}})
    assert over.status == 429 and over.error_code == "rate_limited"
    assert 3000 <= int(over.header("Retry-After") or 0) <= 3600
    assert stored(rt) == 3
    # Another tenant has a bucket of its own.
    assert api.post("/enqueue", {"type": "echo", "payload": {}}, key=KEY_B).status == 201
    # A batch larger than the burst could never pass: 413 naming the burst, not 429.
    batch = {"jobs": [{"type": "echo", "payload": {}}] * 4}
    big = api.post("/enqueue", batch, key=KEY_B)
    assert big.status == 413 and big.json["error"]["details"]["burst"] == 3


@pytest.mark.parametrize("limited", [TENANT_RATE], indirect=True)
def test_bad_requests_do_not_spend_the_tenant_s_tokens(limited: tuple[Api, Runtime]) -> None:
    api, _ = limited
    for _ in range(5):
        assert api.post("/enqueue", {"type": "no-such-type", "payload": {}}).status == 422
    # Refused only once the job is built (the clock, the webhook rules, the batch's
    # keys): these spent a token each before.
    refused = [
        {"type": "echo", "run_at": "2999-01-01T00:00:00Z"},
        {"type": "echo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"},
        {"type": "echo", "callback_url": "http://127.0.0.1:9/hook"},
        {"jobs": [{"type": "echo", "idempotency_key": "k", "payload": {"n": n}} for n in (1, 2)]},
    ]
    for body in refused:
        assert api.post("/enqueue", body).status in (409, 422), body
    assert api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 3}).status == 201


BACKLOG = {"SPOOL_TENANT_LIMITS": json.dumps({TENANT_A: {"backlog": 2}})}


@pytest.mark.parametrize("limited", [BACKLOG], indirect=True)
def test_backlog_quota_counts_waiting_jobs_only(limited: tuple[Api, Runtime]) -> None:
    api, rt = limited
    api.enqueue({"type": "echo", "payload": {}})
    api.enqueue({"type": "echo", "payload": {}})
    full = api.post("/enqueue", {"type": "echo", "payload": {}})
    assert full.status == 429 and "backlog" in full.json["error"]["message"]
    assert full.header("Retry-After")
    assert api.post("/enqueue", {"type": "echo", "payload": {}}, key=KEY_B).status == 201
    assert rt.worker().drain().succeeded == 3  # a finished job no longer counts
    assert api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 2}).status == 201
    assert api.post("/enqueue", {"type": "echo", "payload": {}}).status == 429
    assert stored(rt) == 4
    # A batch larger than the whole backlog could never fit: 413 "split it", not a 429
    # whose Retry-After a client would follow for ever.
    assert rt.worker().drain().succeeded == 2
    too_big = api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 3})
    assert too_big.status == 413 and "split it" in too_big.json["error"]["message"]
    assert too_big.json["error"]["details"] == {"jobs": 3, "backlog": 2}
    assert too_big.header("Retry-After") is None
    assert stored(rt) == 4


BACKLOG_3 = {"SPOOL_TENANT_LIMITS": json.dumps({TENANT_A: {"backlog": 3}})}


@pytest.mark.parametrize("limited", [BACKLOG_3], indirect=True)
def test_a_batch_that_does_not_fit_the_backlog_s_room_says_so(
    limited: tuple[Api, Runtime],
) -> None:
    """One job waiting of 3: the backlog is not full, a batch of 3 just does not fit.
    The refusal names the batch and the room left (a client can send the 2 that fit),
    and stores none of the batch."""
    api, rt = limited
    api.enqueue({"type": "echo", "payload": {}})
    over = api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 3})
    assert over.status == 429 and over.header("Retry-After")
    error = over.json["error"]
    assert "full" not in error["message"]
    assert "3 jobs" in error["message"] and "room for 2" in error["message"]
    assert error["details"] == {"waiting": 1, "backlog": 3, "jobs": 3}
    assert stored(rt) == 1
    assert api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 2}).status == 201
    full = api.post("/enqueue", {"type": "echo", "payload": {}})
    assert full.status == 429 and "backlog is full" in full.json["error"]["message"]
    assert full.json["error"]["details"] == {"waiting": 3, "backlog": 3}
    assert stored(rt) == 3


def dead_jobs(rt: Runtime, n: int) -> list[str]:
    """n dead jobs of tenant A (enqueued past the HTTP edge: the quota holds 2)."""
    from chalicelib.service import EnqueueRequest

    failing = EnqueueRequest(type="fail", payload={"always": True}, max_attempts=1)
    ids = [result.job.id for result in rt.service.enqueue([failing] * n, TENANT_A)]
    assert rt.worker().drain().dead == n
    return ids


def states(rt: Runtime, ids: list[str]) -> list[str]:
    found = [rt.store.get(job_id) for job_id in ids]
    return [job.state.value if job is not None else "gone" for job in found]


def every_redrive_route(api: Api, job_id: str) -> list[Reply]:
    """One call of each redrive route (API and dashboard, one job and bulk), all of
    `job_id`'s tenant, for tests that hold every route to one limit."""
    return [
        api.post(f"/dlq/{job_id}/redrive"),
        api.post("/dlq/redrive"),
        api.post(f"/ui/api/jobs/{job_id}/redrive"),
        api.post("/ui/api/dead/redrive", {"all": True}),
        api.post("/ui/api/dead/redrive", {"ids": [job_id]}),
    ]


@pytest.mark.parametrize("limited", [BACKLOG], indirect=True)
def test_a_redrive_is_held_to_the_backlog_quota_on_every_route(
    limited: tuple[Api, Runtime],
) -> None:
    """A tenant held to 2 waiting jobs let failing jobs die and redrove them all at
    once: every redrive route put them back among the waiting jobs past the quota."""
    api, rt = limited
    dead = dead_jobs(rt, 3)
    waiting = [api.enqueue({"type": "echo", "delay": 600}) for _ in range(2)]  # full
    refused = every_redrive_route(api, dead[0])
    for reply in refused:
        assert reply.status == 429 and "backlog" in reply.json["error"]["message"], reply.body
        assert reply.header("Retry-After")
    assert states(rt, dead) == ["dead"] * 3
    # Room for one: a bulk redrive takes one, a redrive of two named jobs none.
    api.post(f"/jobs/{waiting[0]}/cancel")
    two = api.post("/ui/api/dead/redrive", {"ids": dead[:2]})
    assert two.status == 429, two.body
    bulk = api.post("/dlq/redrive")
    assert bulk.status == 200 and bulk.json["redriven"] == 1, bulk.body
    assert sorted(states(rt, dead)) == ["dead", "dead", "queued"]
    # More named jobs than the whole backlog could ever hold: 413, as for a batch.
    assert rt.worker().drain().dead == 1
    too_many = api.post("/ui/api/dead/redrive", {"ids": dead})
    assert too_many.status == 413 and too_many.json["error"]["details"] == {
        "jobs": 3,
        "backlog": 2,
    }
    # The dashboard's "all" takes what fits and says more remain.
    api.post(f"/jobs/{waiting[1]}/cancel")
    step = api.post("/ui/api/dead/redrive", {"all": True})
    assert step.status == 200 and step.json["done"] == 2 and step.json["more"] is True
    # Another tenant's quota is its own.
    assert api.post("/dlq/redrive", key=KEY_B).status == 200


@pytest.mark.parametrize("limited", [BACKLOG], indirect=True)
def test_the_store_s_own_backlog_refusal_is_the_same_429_on_every_route(
    limited: tuple[Api, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge's count is read before the write, so another process may fill the
    backlog in between; the store counts again in the write's own step. Here the
    edge's count is made to miss every waiting job (as it misses another process's
    that commit just after it read): the store refuses, with the same 429 and
    details, and stores none of the request."""
    from chalicelib.api.throttle import EnqueueGate

    api, rt = limited
    dead = dead_jobs(rt, 2)
    api.enqueue({"type": "echo", "delay": 600})
    monkeypatch.setattr(EnqueueGate, "_waiting", lambda self, tenant: 0)
    # Room for one: a batch of two (one keyed, one not) does not fit, whole.
    mixed = {"jobs": [{"type": "echo", "idempotency_key": "k"}, {"type": "echo"}]}
    over = api.post("/enqueue", mixed)
    assert over.status == 429 and over.header("Retry-After"), over.body
    assert over.json["error"]["details"] == {"waiting": 1, "backlog": 2, "jobs": 2}
    assert "room for 1" in over.json["error"]["message"]
    assert stored(rt) == 3 and rt.store.get_by_key(TENANT_A, "k") is None
    api.enqueue({"type": "echo", "delay": 600})  # full
    refused = [
        api.post("/enqueue", {"type": "echo"}),
        api.post("/enqueue", {"type": "echo", "idempotency_key": "k2"}),
        api.post("/enqueue", {"jobs": [{"type": "echo"}] * 2}),
        api.post(f"/dlq/{dead[0]}/redrive"),
        api.post("/dlq/redrive"),
        api.post(f"/ui/api/jobs/{dead[0]}/redrive"),
        api.post("/ui/api/dead/redrive", {"all": True}),
        api.post("/ui/api/dead/redrive", {"ids": dead[:1]}),
    ]
    for reply in refused:
        assert reply.status == 429 and reply.header("Retry-After"), reply.body
        assert "backlog is full" in reply.json["error"]["message"], reply.body
        assert reply.json["error"]["details"] == {"waiting": 2, "backlog": 2}, reply.body
    assert stored(rt) == 4 and states(rt, dead) == ["dead"] * 2
    assert rt.store.waiting_count(TENANT_A) == 2


BACKLOG_AND_BURST = {
    "SPOOL_TENANT_LIMITS": json.dumps({TENANT_A: {"rate": "100/s", "burst": 3, "backlog": 5}})
}


@pytest.mark.parametrize("limited", [BACKLOG_AND_BURST], indirect=True)
def test_a_batch_over_the_burst_is_413_even_while_the_backlog_is_full(
    limited: tuple[Api, Runtime],
) -> None:
    """The backlog's 429 came first, so a client following its Retry-After retried a
    batch that could never pass, to meet the 413 only once the backlog drained."""
    from chalicelib.service import EnqueueRequest

    api, rt = limited
    rt.service.enqueue([EnqueueRequest(type="echo", delay=600)] * 4, TENANT_A)  # 4 of 5 waiting
    batch = api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 4})
    assert batch.status == 413 and batch.json["error"]["details"] == {"jobs": 4, "burst": 3}
    assert batch.header("Retry-After") is None
    assert stored(rt) == 4


SIGN_INS = {"SPOOL_AUTH_FAILURES": "3/h"}


@pytest.mark.parametrize("limited", [SIGN_INS], indirect=True)
def test_failed_sign_ins_are_slowed_without_locking_out_the_owner(
    limited: tuple[Api, Runtime],
) -> None:
    api, _ = limited
    assert api.post("/enqueue", {"type": "echo", "payload": {}}, key=KEY_A).status == 201
    answers = [api.get("/status/j_nothing", key=f"guess-{n}").status for n in range(5)]
    assert answers == [401, 401, 401, 429, 429]  # "3/h": three failures, then 429
    refused = api.get("/status/j_nothing", key="guess-9")
    assert refused.error_code == "rate_limited" and int(refused.header("Retry-After") or 0) > 0
    assert api.get("/metrics", key="also-wrong").status == 429
    # The owner of a key that signed in from this address before is still served.
    assert api.post("/enqueue", {"type": "echo", "payload": {}}, key=KEY_A).status == 201


@pytest.mark.parametrize("limited", [SIGN_INS], indirect=True)
def test_a_throttled_client_has_no_key_checked_so_a_right_guess_looks_like_a_wrong_one(
    limited: tuple[Api, Runtime],
) -> None:
    """Was: past the rate every guess was still checked, and a right one answered 200
    among the 429s. KEY_A signs in first from this address, so it is its owner's;
    KEY_B has never signed in from here."""
    api, _ = limited
    assert api.get("/jobs", key=KEY_A).status == 200
    assert [api.get("/jobs", key=f"guess-{n}").status for n in range(4)] == [401] * 3 + [429]
    right_guess = api.get("/jobs", key=KEY_B)
    assert right_guess.status == 429 and right_guess.error_code == "rate_limited"
    assert int(right_guess.header("Retry-After") or 0) > 0
    assert api.get("/jobs", key=KEY_A).status == 200  # the owner's key is still checked


def test_a_throttled_client_may_have_one_key_checked_per_token_it_earns_back() -> None:
    from chalicelib.api.throttle import FailedSignIns
    from chalicelib.limits import Rate

    now = [0.0]
    gate = FailedSignIns(Rate(2, 60), timer=lambda: now[0])
    assert gate.refusing("10.0.0.1", "k") == 0.0  # nothing failed yet: check it
    gate.succeeded("10.0.0.1", "owner")
    assert [gate.failed("10.0.0.1") for _ in range(2)] == [0.0, 0.0]  # the allowance
    assert gate.refusing("10.0.0.1", "guess") == 30.0  # not checked: one token is 30 s
    assert gate.refusing("10.0.0.1", "owner") == 0.0
    assert gate.refusing("10.0.0.2", "guess") == 0.0  # another address is not slowed
    now[0] = 30.0
    assert gate.refusing("10.0.0.1", "guess") == 0.0  # one token back: one check
    assert gate.failed("10.0.0.1") == 0.0
    assert gate.refusing("10.0.0.1", "guess") == 30.0
    assert FailedSignIns(None).refusing("10.0.0.1", "guess") == 0.0


@pytest.mark.parametrize("limited", [SIGN_INS], indirect=True)
def test_an_operator_key_on_the_dashboard_is_no_failed_sign_in(
    limited: tuple[Api, Runtime],
) -> None:
    """A valid key on the wrong route is told so every time, and uses none of the
    address's allowance of failures."""
    api, _ = limited
    answers = [api.get("/ui/api/overview", key=OPERATOR_KEY).status for _ in range(6)]
    assert answers == [403] * 6
    guesses = [api.get("/status/j_nothing", key=f"guess-{n}").status for n in range(4)]
    assert guesses == [401, 401, 401, 429]  # the whole allowance was still there


@pytest.mark.parametrize("limited", [SIGN_INS], indirect=True)
def test_an_operator_key_on_a_job_route_is_told_so_and_is_no_failed_sign_in(
    limited: tuple[Api, Runtime],
) -> None:
    """It was answered 401 "invalid API key", and counted against the address."""
    api, _ = limited
    for path in ("/jobs", "/status/j_nothing", "/openapi.json"):
        refused = api.get(path, key=OPERATOR_KEY)
        assert refused.status == 403, (path, refused.body)
        assert "operator key" in refused.json["error"]["message"]
        assert "SPOOL_API_KEYS" in refused.json["error"]["message"]
    guesses = [api.get("/status/j_nothing", key=f"guess-{n}").status for n in range(4)]
    assert guesses == [401, 401, 401, 429]  # the whole allowance was still there


@pytest.mark.parametrize("limited", [SIGN_INS], indirect=True)
def test_a_valid_key_sent_with_headers_no_route_reads_cannot_push_the_owner_out(
    limited: tuple[Api, Runtime],
) -> None:
    """Each (X-API-Key, Authorization) pair used to be its own trusted credential: one
    valid key sent with eight Authorization values took every place the address has,
    and the owner, forgotten, was throttled with the guessers."""
    api, _ = limited
    assert api.get("/jobs", key=KEY_A).status == 200  # the owner signs in
    for n in range(20):  # another tenant on the same address
        headers = {"Authorization": f"Bearer variant-{n}"}
        assert api.call("GET", "/jobs", key=KEY_B, headers=headers).status == 200
    assert [api.get("/jobs", key=f"guess-{n}").status for n in range(4)] == [401] * 3 + [429]
    assert api.get("/jobs", key=KEY_A).status == 200


def test_public_metrics_sign_no_key_in(tmp_path: Path) -> None:
    """With SPOOL_METRICS_PUBLIC every X-API-Key sent to /metrics was kept as a key that
    signed in from the address: eight junk strings pushed the owner's key out."""
    settings = settings_for(tmp_path, extra=SIGN_INS, metrics_public=True)
    with installed(settings), Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        assert api.get("/jobs", key=KEY_A).status == 200
        for n in range(20):
            assert api.get("/metrics", key=f"junk-{n}").status == 200
        guesses = [api.get("/jobs", key=f"guess-{n}").status for n in range(4)]
        assert guesses == [401, 401, 401, 429]
        assert api.get("/jobs", key=KEY_A).status == 200


def test_the_trusted_keys_kept_are_the_ones_signing_in_lately() -> None:
    """A key used all along kept its first place and was pushed out by newer ones."""
    from chalicelib.api.throttle import TRUSTED_PER_CLIENT, FailedSignIns
    from chalicelib.limits import Rate

    gate = FailedSignIns(Rate(1, 3600), timer=lambda: 0.0)
    gate.succeeded("10.0.0.1", "owner")
    for n in range(TRUSTED_PER_CLIENT * 2):
        gate.succeeded("10.0.0.1", f"other-{n}")
        gate.succeeded("10.0.0.1", "owner")  # the owner keeps working meanwhile
    gate.failed("10.0.0.1")
    assert gate.refusing("10.0.0.1", "guess") > 0
    assert gate.refusing("10.0.0.1", "owner") == 0.0
    assert gate.refusing("10.0.0.1", "other-0") > 0  # unused longest: forgotten


def test_an_ipv6_client_is_counted_by_its_64_so_fresh_addresses_do_not_reset_it() -> None:
    from chalicelib.api.throttle import FailedSignIns, address_group
    from chalicelib.limits import Rate

    gate = FailedSignIns(Rate(2, 3600), timer=lambda: 0.0)
    guesses = [gate.failed(f"2001:db8:0:1::{n:x}") for n in range(3)]
    assert guesses[:2] == [0.0, 0.0] and guesses[2] > 0  # three addresses, one /64
    assert gate.refusing("2001:db8:0:1:ffff::1", "guess") > 0
    assert gate.refusing("2001:db8:0:2::1", "guess") == 0.0  # the next /64 is another client
    assert address_group("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_group("10.0.0.1") == "10.0.0.1"
    assert address_group("fe80::1%eth0") == "fe80::/10"  # one link: stop 51
    assert address_group("not an address") == "not an address"


def test_failed_sign_ins_are_counted_per_client() -> None:
    from chalicelib.api.throttle import FailedSignIns
    from chalicelib.limits import Rate

    now = [0.0]
    gate = FailedSignIns(Rate(2, 60), timer=lambda: now[0])
    # "2/m" allows two failures; the third waits for a token (30 s at 2 a minute).
    assert [gate.failed("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 30.0]
    assert gate.failed("10.0.0.2") == 0.0  # another client is not slowed
    now[0] = 30.0  # one failure forgiven, and this one takes it back
    assert gate.failed("10.0.0.1") == 0.0
    assert gate.failed("10.0.0.1") == 30.0
    now[0] = 90.0  # a whole window later the client is back to its full allowance
    assert gate.failed("10.0.0.1") == 0.0
    assert FailedSignIns(None).failed("x") == 0.0


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"SPOOL_TENANT_LIMITS": "[1]"}, "SPOOL_TENANT_LIMITS"),
        ({"SPOOL_TENANT_LIMITS": '{"*": {"rate": "fast"}}'}, "SPOOL_TENANT_LIMITS"),
        ({"SPOOL_TENANT_LIMITS": '{"a": {"burst": 5}}'}, "SPOOL_TENANT_LIMITS"),
        ({"SPOOL_TENANT_LIMITS": '{"a": {"backlog": 0}}'}, "SPOOL_TENANT_LIMITS"),
        ({"SPOOL_AUTH_FAILURES": "lots"}, "SPOOL_AUTH_FAILURES"),
    ],
)
def test_a_malformed_limit_setting_answers_503_and_logs_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: dict[str, str], named: str
) -> None:
    with (
        installed(settings_for(tmp_path, extra=extra)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        reply = Api(client).post("/enqueue", {"type": "echo", "payload": {}})
    assert reply.status == 503 and reply.error_code == "misconfigured"
    assert named in caplog.text


def test_tenant_entries_override_the_default_field_by_field() -> None:
    from chalicelib.config import Settings
    from chalicelib.limit_settings import tenant_limits
    from chalicelib.limits import Rate

    spec = {
        "*": {"rate": "10/s", "burst": 20, "backlog": 1000},
        "big": {"rate": "100/s"},
        "free": {"rate": None, "burst": None},
    }
    limits = tenant_limits(Settings(extra={"SPOOL_TENANT_LIMITS": json.dumps(spec)}))
    assert limits.of("anyone").bucket == (10.0, 20) and limits.of("anyone").backlog == 1000
    assert limits.of("big").rate == Rate(100, 1.0) and limits.of("big").bucket == (100.0, 20)
    assert limits.of("free").bucket is None and limits.of("free").backlog == 1000
    assert limits.active


@pytest.mark.parametrize("limited", [TENANT_RATE], indirect=True)
def test_a_repeated_idempotency_key_takes_no_token_and_is_never_refused(
    limited: tuple[Api, Runtime],
) -> None:
    """A client retrying after a lost answer is given its job: a repeat is not a new
    job, so it spends nothing of the tenant's rate and is answered past the limit."""
    api, rt = limited
    keyed = {"type": "echo", "payload": {}, "idempotency_key": "order-7"}
    first = api.post("/enqueue", keyed)
    assert first.status == 201
    for _ in range(5):
        again = api.post("/enqueue", keyed)
        assert again.status == 200 and again.json["id"] == first.json["id"]
    # Two tokens of the three are left: the repeats took none.
    assert api.post("/enqueue", {"jobs": [{"type": "echo", "payload": {}}] * 2}).status == 201
    assert api.post("/enqueue", {"type": "echo", "payload": {}}).status == 429
    # With the bucket empty, the repeat is still answered with the stored job...
    assert api.post("/enqueue", keyed).json["id"] == first.json["id"]
    # ...and a batch of one repeat and one new job needs a token for the new one only.
    mixed = {"jobs": [keyed, {"type": "echo", "payload": {}, "idempotency_key": "order-8"}]}
    assert api.post("/enqueue", mixed).status == 429
    assert stored(rt) == 3


@pytest.mark.parametrize("limited", [BACKLOG], indirect=True)
def test_a_repeat_is_answered_when_the_backlog_is_full(limited: tuple[Api, Runtime]) -> None:
    api, _ = limited
    keyed = {"type": "echo", "payload": {}, "idempotency_key": "k"}
    job_id = api.enqueue(keyed)
    api.enqueue({"type": "echo", "payload": {}})
    assert api.post("/enqueue", {"type": "echo", "payload": {}}).status == 429
    again = api.post("/enqueue", keyed)
    assert again.status == 200 and again.json["id"] == job_id


def test_concurrent_enqueues_cannot_pass_the_backlog_quota(tmp_path: Path) -> None:
    """Each request checks the count and then stores: two requests of one process
    between those steps would both find the last room. The store's add is slowed so
    that, without the gate's per-tenant turn, all of them would be in that gap."""
    import threading
    import time

    from chalicelib.api.throttle import EnqueueGate, RateLimited
    from chalicelib.handlers import Registry
    from chalicelib.limit_settings import TenantLimit, TenantLimits
    from chalicelib.service import EnqueueRequest, Service
    from chalicelib.storage.sqlite import SQLiteStore

    registry = Registry()
    registry.handler("echo")(lambda payload: payload)
    store = SQLiteStore(str(tmp_path / "q.db"))
    service = Service(store, registry)
    real_add = store.add

    def slow_add(jobs: Any, cap: Any = None) -> Any:
        time.sleep(0.05)
        return real_add(jobs, cap)

    store.add = slow_add  # type: ignore[method-assign]
    gate = EnqueueGate(store, TenantLimits(TenantLimit(), {"t": TenantLimit(backlog=5)}))
    job = EnqueueRequest(type="echo", delay=3600)
    start = threading.Barrier(8)
    answers: list[str] = []

    def enqueue() -> None:
        start.wait()
        try:
            with gate.admitted("t", [None]):
                service.enqueue([job], "t")
            answers.append("stored")
        except RateLimited:
            answers.append("refused")

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(answers) == ["refused"] * 3 + ["stored"] * 5
    assert sum(store.state_counts("t").values()) == 5
    store.close()


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("SPOOL_TENANT_LIMITS", {"acme ": {"backlog": 5}}, "'acme '"),
        ("SPOOL_TENANT_LIMITS", {"": {"rate": "1/s"}}, "''"),
        ("SPOOL_TENANT_WEIGHTS", {"acme corp": 3}, "'acme corp'"),
    ],
)
def test_a_tenant_no_key_could_belong_to_is_refused_at_start(
    tmp_path: Path, name: str, value: dict[str, Any], named: str
) -> None:
    """An entry for a tenant name SPOOL_API_KEYS refuses ("acme " with its stray space)
    could never apply: it was taken silently, and the tenant it meant had no limit."""
    from chalicelib.config import ConfigError
    from chalicelib.limit_settings import validate

    settings = settings_for(tmp_path, extra={name: json.dumps(value)})
    with pytest.raises(ConfigError) as refused:
        validate(settings)
    message = str(refused.value)
    assert name in message and named in message and "A-Za-z0-9_.:-" in message
