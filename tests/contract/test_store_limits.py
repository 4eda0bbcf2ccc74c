"""Limits and fair turns in the store's claim, on every backend (the rules are in
chalicelib/storage/base.py and chalicelib/limits.py), driven by the test clock.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore
from tests.factories import new_job, stored
from tests.threads import run_together

LEASE = 30.0


def add(store: JobStore, clock: FakeClock, n: int = 1, **fields) -> list[str]:
    type_ = fields.pop("type", "echo")
    return [r.job.id for r in store.add([new_job(clock, type_, **fields) for _ in range(n)])]


def finish(store: JobStore, job) -> None:
    assert store.finish([Completion(job.id, job.lease_token, JobState.SUCCEEDED)]) == [True]


def test_concurrency_limit_on_a_type_holds_across_claims(store: JobStore, clock: FakeClock) -> None:
    resize = add(store, clock, 6, type="resize", tenant="acme")
    add(store, clock, 3, type="other", tenant="acme")
    policy = ClaimPolicy((Limit("type", "resize", concurrency=2),))
    first = store.claim(100, LEASE, policy=policy)
    assert Counter(j.type for j in first) == {"resize": 2, "other": 3}
    assert store.claim(100, LEASE, policy=policy) == []
    # Held jobs are untouched: no attempt spent, still queued.
    held = [store.get(i) for i in resize if i not in {j.id for j in first}]
    assert [(j.state, j.attempts) for j in held if j] == [(JobState.QUEUED, 0)] * 4
    finish(store, next(j for j in first if j.type == "resize"))
    again = store.claim(100, LEASE, policy=policy)
    assert [j.type for j in again] == ["resize"]
    # Without the policy the store claims as before.
    assert len(store.claim(100, LEASE)) == 3


def test_concurrency_limit_on_a_queue_and_reaped_leases_free_their_slot(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 4, queue="mail", max_attempts=5)
    add(store, clock, 2, queue="img")
    policy = ClaimPolicy((Limit("queue", "mail", concurrency=1),))
    first = store.claim(10, LEASE, policy=policy)
    assert Counter(j.queue for j in first) == {"mail": 1, "img": 2}
    assert store.claim(10, LEASE, policy=policy, queues=["mail"]) == []
    clock.advance(LEASE + 1)  # the mail job's worker died: its lease runs out
    reclaimed = store.claim(10, LEASE, policy=policy, queues=["mail"])
    assert len(reclaimed) == 1 and reclaimed[0].queue == "mail"


def test_rate_limit_is_a_sliding_window_of_starts(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 20, type="partner")
    policy = ClaimPolicy((Limit("type", "partner", rate=Rate(3, 10.0)),))
    assert len(store.claim(1, LEASE, policy=policy)) == 1  # t=0: one start
    clock.advance(9)
    assert len(store.claim(10, LEASE, policy=policy)) == 2  # t=9: two more, the window is full
    assert store.claim(10, LEASE, policy=policy) == []
    clock.advance(1.5)  # t=10.5: only the t=0 start has left the window
    assert len(store.claim(10, LEASE, policy=policy)) == 1
    assert store.claim(10, LEASE, policy=policy) == []
    clock.advance(9)  # t=19.5: the two t=9 starts are out
    assert len(store.claim(10, LEASE, policy=policy)) == 2


def test_a_rate_counts_its_starts_a_hand_off_margin_longer_than_its_window(
    store: JobStore, clock: FakeClock
) -> None:
    """Handlers begin a little after their claims: a window of exactly `per` let the
    next window's claims start handlers within one second of the last ones (up to 2N
    calls a second under "N/s"). Starts are counted over per + Rate.window's margin."""
    rate = Rate(3, 10.0)
    assert rate.window == pytest.approx(10.1)
    add(store, clock, 6, type="partner")
    policy = ClaimPolicy((Limit("type", "partner", rate=rate),))
    assert len(store.claim(10, LEASE, policy=policy)) == 3
    clock.advance(10.05)  # past `per`, inside the margin: still full
    assert store.claim(10, LEASE, policy=policy) == []
    clock.advance(0.1)  # past per + margin
    assert len(store.claim(10, LEASE, policy=policy)) == 3


def test_a_rate_of_other_digits_is_no_rate() -> None:
    with pytest.raises(ValueError, match="not a rate"):
        Rate.parse("\u0665/s")  # ARABIC-INDIC DIGIT FIVE


def test_rate_counts_starts_not_running_jobs(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 5, queue="api")
    policy = ClaimPolicy((Limit("queue", "api", rate=Rate.parse("2/m")),))
    for job in store.claim(10, LEASE, policy=policy):
        finish(store, job)  # finished at once: the starts still count
    assert store.claim(10, LEASE, policy=policy) == []
    clock.advance(60.5)
    assert len(store.claim(10, LEASE, policy=policy)) == 2


def test_concurrency_and_rate_together_and_both_scopes(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 5, queue="q", type="a", priority=1)  # a's go first, so one starts
    add(store, clock, 5, queue="q", type="b")
    policy = ClaimPolicy(
        (
            Limit("queue", "q", concurrency=3),
            Limit("type", "a", concurrency=5, rate=Rate(1, 60)),
        )
    )
    claimed = store.claim(10, LEASE, policy=policy)
    assert len(claimed) == 3 and Counter(j.type for j in claimed)["a"] == 1
    for job in claimed:
        finish(store, job)
    second = store.claim(10, LEASE, policy=policy)  # a's rate is spent: only b's start
    assert Counter(j.type for j in second) == {"b": 3}


def test_claim_by_ids_keeps_limits_and_reports_holds(store: JobStore, clock: FakeClock) -> None:
    ids = add(store, clock, 3, type="resize")
    policy = ClaimPolicy((Limit("type", "resize", concurrency=1),))
    with policy.holds.watch() as holds:
        claimed = store.claim(10, LEASE, ids=ids, policy=policy)
    assert len(claimed) == 1
    # The job it took filled the limit (job_id ""); the other two were held.
    assert sorted(h.job_id for h in holds) == sorted(["", *(set(ids) - {claimed[0].id})])
    assert {(h.key, h.kind) for h in holds} == {("type:resize", "concurrency")}
    with policy.holds.watch() as holds:
        assert store.claim(10, LEASE, ids=ids, policy=policy) == []
    # The limit was full before the claim began (job_id ""), and both jobs were held.
    assert sorted(h.job_id for h in holds) == sorted(["", *(set(ids) - {claimed[0].id})])
    assert [stored(store, i).attempts for i in ids if i != claimed[0].id] == [0, 0]


def test_fair_turns_alternate_between_tenants(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 30, tenant="a")
    clock.advance(1)
    add(store, clock, 3, tenant="b")
    policy = ClaimPolicy(fair=True)
    order = [store.claim(1, LEASE, policy=policy)[0].tenant for _ in range(8)]
    assert order[:6] in (["a", "b"] * 3, ["b", "a"] * 3)
    assert order[6:] == ["a", "a"]  # b has run out
    # Without fairness the backlog goes first (priority, then run_at).
    add(store, clock, 1, tenant="c")
    assert store.claim(1, LEASE)[0].tenant == "a"


def test_fair_turns_in_one_claim_and_priority_within_a_tenant(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 20, tenant="a", priority=9)
    clock.advance(1)
    low = add(store, clock, 1, tenant="b", priority=0)
    high = add(store, clock, 1, tenant="b", priority=5)
    add(store, clock, 1, tenant="c")
    policy = ClaimPolicy(fair=True)
    claimed = store.claim(4, LEASE, policy=policy)
    assert Counter(j.tenant for j in claimed) == {"a": 2, "b": 1, "c": 1}
    assert [j.id for j in claimed if j.tenant == "b"] == high
    nxt = store.claim(2, LEASE, policy=policy)
    assert {j.tenant for j in nxt} == {"a", "b"} and low[0] in {j.id for j in nxt}


def test_weighted_turns(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 40, tenant="big")
    add(store, clock, 40, tenant="small")
    policy = ClaimPolicy(fair=True, weights={"big": 3})
    claimed = [store.claim(1, LEASE, policy=policy)[0].tenant for _ in range(20)]
    assert Counter(claimed) == {"big": 15, "small": 5}


def test_a_newcomer_joins_the_current_turn_without_a_burst(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 40, tenant="a")
    policy = ClaimPolicy(fair=True)
    for _ in range(10):
        store.claim(1, LEASE, policy=policy)
    add(store, clock, 10, tenant="b")
    order = [store.claim(1, LEASE, policy=policy)[0].tenant for _ in range(6)]
    assert Counter(order) == {"a": 3, "b": 3}


def test_fair_turns_skip_held_jobs(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 5, tenant="a", type="slow")
    add(store, clock, 5, tenant="b", type="fast")
    policy = ClaimPolicy((Limit("type", "slow", concurrency=1),), fair=True)
    claimed = store.claim(6, LEASE, policy=policy)
    assert Counter(j.type for j in claimed) == {"slow": 1, "fast": 5}


def test_delayed_jobs_are_not_due_under_fair_turns(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, 2, tenant="a", delay=60)
    add(store, clock, 1, tenant="b")
    policy = ClaimPolicy(fair=True)
    only = store.claim(5, LEASE, policy=policy)
    assert [j.tenant for j in only] == ["b"]
    finish(store, only[0])
    clock.advance(61)
    assert len(store.claim(5, LEASE, policy=policy)) == 2


def test_concurrency_limit_holds_under_claims_from_many_threads(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 40, type="resize")
    policy = ClaimPolicy((Limit("type", "resize", concurrency=3),))
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        for _ in range(5):
            jobs = store.claim(2, LEASE, policy=policy)
            with lock:
                claimed.extend(j.id for j in jobs)

    errors = run_together(claimer, 4)
    assert not errors
    assert len(claimed) == 3 == len(set(claimed))


def test_token_bucket_starts_full_refills_and_never_overflows(
    store: JobStore, clock: FakeClock
) -> None:
    assert [store.take_tokens("tenant:a", 2.0, 5) for _ in range(5)] == [0.0] * 5
    assert store.take_tokens("tenant:a", 2.0, 5) == 0.5  # empty: one token in 0.5 s
    assert store.take_tokens("tenant:b", 2.0, 5, cost=5) == 0.0  # buckets are separate
    clock.advance(1)
    assert store.take_tokens("tenant:a", 2.0, 5, cost=3) == 0.5  # 2 there, 3 wanted
    assert store.take_tokens("tenant:a", 2.0, 5, cost=2) == 0.0  # a refusal took nothing
    clock.advance(3600)
    assert store.take_tokens("tenant:a", 2.0, 5, cost=5) == 0.0  # capped at the burst
    assert store.take_tokens("tenant:a", 2.0, 5) == 0.5


def test_a_take_of_more_than_the_burst_says_how_far_the_bucket_is_from_full(
    store: JobStore, clock: FakeClock
) -> None:
    """Never granted, and it takes nothing: (cost - tokens) / rate, the look that a rate's
    line of held jobs takes before it joins (chalicelib/held_line.py)."""
    assert store.take_tokens("held:a", 2.0, 5, cost=6) == 0.5  # full: one short
    assert store.take_tokens("held:a", 2.0, 5, cost=3) == 0.0  # 3 places taken
    assert store.take_tokens("held:a", 2.0, 5, cost=6) == 2.0  # 4 short: 3 taken, + 1
    assert store.take_tokens("held:a", 2.0, 5, cost=6) == 2.0  # the look took nothing
    clock.advance(1)  # two places leave a second
    assert store.take_tokens("held:a", 2.0, 5, cost=6) == 1.0


def test_a_take_that_read_the_clock_early_does_not_refill_time_twice(
    store: JobStore, clock: FakeClock
) -> None:
    """A caller reads the clock, then waits its turn at the bucket while another takes
    at a later time. Storing the early time as the bucket's last update set it back,
    and the next take refilled that time a second time: under concurrent requests the
    enqueue rate let 2-5x through (SQLite, Redis, memory)."""
    assert store.take_tokens("tenant:c", 2.0, 4, cost=4) == 0.0  # empty at t
    clock.advance(1)
    assert store.take_tokens("tenant:c", 2.0, 4, cost=2) == 0.0  # t+1: the 2 refilled
    clock.advance(-0.5)  # a take whose clock was read before that one's
    assert store.take_tokens("tenant:c", 2.0, 4) == 0.5  # nothing there
    clock.advance(0.5)  # back at t+1: no time has passed since the bucket was emptied
    assert store.take_tokens("tenant:c", 2.0, 4) == 0.5


def test_token_bucket_holds_under_many_threads(store: JobStore, clock: FakeClock) -> None:
    granted: list[float] = []
    lock = threading.Lock()

    def taker() -> None:
        for _ in range(10):
            wait = store.take_tokens("tenant:t", 1.0, 15)
            with lock:
                granted.append(wait)

    assert run_together(taker, 4) == []
    assert len(granted) == 40 and granted.count(0.0) == 15


def test_limits_alone_keep_the_usual_order_across_tenants(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 3, tenant="a")
    clock.advance(1)
    add(store, clock, 1, tenant="b")
    policy = ClaimPolicy((Limit("type", "unrelated", concurrency=1),))  # no fair turns
    assert [store.claim(1, LEASE, policy=policy)[0].tenant for _ in range(4)] == [
        "a",
        "a",
        "a",
        "b",
    ]


# -- the wall clock stepping back (an NTP step, a VM restored) ---------------------------
#
# Token buckets and rate windows keep wall-clock instants in the store. A bucket's last
# update "never goes back in time" (so concurrent takes cannot refill the same time
# twice), and a start recorded just before the step is dated in the future afterwards.
# Either way, a step back of an hour froze the limit for that hour: the bucket refilled
# nothing until the clock was back where it had been, while every refused take said to
# retry in a fraction of a second, and a rate-limited queue started nothing at all.
# After a step back, refilling and windows go on from the new time: seconds after the
# limit is next used the bucket has tokens again, and a window later the queue starts
# jobs again.

HOUR = 3600.0


def test_a_bucket_refills_after_the_clock_steps_back(store: JobStore, clock: FakeClock) -> None:
    waits = [store.take_tokens("enqueue:acme", 5.0, 5) for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and waits[5] > 0  # emptied
    clock.advance(-HOUR)
    store.take_tokens("enqueue:acme", 5.0, 5)  # the first take after the step
    clock.advance(10)  # 50 tokens' worth of time at 5/s, well over the burst
    assert store.take_tokens("enqueue:acme", 5.0, 5) == 0.0


def test_a_rate_window_reopens_after_the_clock_steps_back(
    store: JobStore, clock: FakeClock
) -> None:
    store.add([new_job(clock, "echo", queue="mail") for _ in range(3)])
    policy = ClaimPolicy(limits=(Limit(scope="queue", name="mail", rate=Rate(2, 10.0)),))
    assert len(store.claim(10, LEASE, queues=["mail"], policy=policy)) == 2
    clock.advance(-HOUR)
    # Jobs enqueued after the step (those from before it are due an hour later: their
    # run_at is an instant, and the clock now reads an hour before it).
    store.add([new_job(clock, "echo", queue="mail") for _ in range(3)])
    store.claim(10, LEASE, queues=["mail"], policy=policy)  # the first claim after the step
    clock.advance(60)  # six windows of 10 s
    assert len(store.claim(10, LEASE, queues=["mail"], policy=policy)) == 2


def test_waiting_count_is_the_tenant_s_queued_and_retrying_jobs(
    store: JobStore, clock: FakeClock
) -> None:
    """What the backlog quota caps: queued jobs (delayed ones too) and retrying ones of
    that tenant; running, finished and cancelled jobs and other tenants' are not."""
    from datetime import timedelta

    add(store, clock, 4, tenant="acme")
    add(store, clock, 2, tenant="other")
    claimed = [j for j in store.claim(10, LEASE) if j.tenant == "acme"]
    assert len(claimed) == 4  # one stays running
    ok, retry, dead = claimed[:3]
    later = clock.now() + timedelta(seconds=600)
    assert store.finish(
        [
            Completion(ok.id, ok.lease_token or "", JobState.SUCCEEDED),
            Completion(retry.id, retry.lease_token or "", JobState.RETRYING, retry_at=later),
            Completion(dead.id, dead.lease_token or "", JobState.DEAD, error="no"),
        ]
    ) == [True, True, True]
    store.cancel(add(store, clock, 1, tenant="acme")[0], "acme")
    add(store, clock, 1, tenant="acme", delay=3600)
    add(store, clock, 2, tenant="acme", queue="b")
    assert store.waiting_count("acme") == 4  # retrying, delayed, two queued
    assert store.waiting_count("other") == 0  # both running
    assert store.waiting_count("nobody") == 0


# -- a long run of held jobs ahead of ones that may start ------------------------------
#
# A claim that reads due jobs best first and stops after so many (DynamoDB looked at
# 1000 in all, 250 per tenant under fair turns) found nothing but held jobs when a full
# limit held more than that ahead of the rest: the jobs behind them, of a type or queue
# with room, never started while the limit stayed full (a `slow` type at concurrency 1
# with a backlog starved every other type of lower priority). A full limit's jobs are
# left out of what a claim reads, so they cost it nothing.

HELD_RUN = 1100  # past DynamoDB's EXAMINE (1000) and EXAMINE_PER_TENANT (250)


def _held_run_then_free(store: JobStore, clock: FakeClock, fair: bool) -> None:
    store.add([new_job(clock, "slow", tenant="a", priority=5) for _ in range(HELD_RUN)])
    add(store, clock, 5, type="fast", tenant="a")
    policy = ClaimPolicy((Limit("type", "slow", concurrency=1),), fair=fair)
    first = store.claim(10, LEASE, policy=policy)
    claimed = [*first, *store.claim(10, LEASE, policy=policy)]  # slow is full from the start
    assert Counter(j.type for j in claimed) == {"slow": 1, "fast": 5}


def test_jobs_behind_a_long_held_run_start(store: JobStore, clock: FakeClock) -> None:
    _held_run_then_free(store, clock, fair=False)


def test_jobs_behind_a_long_held_run_start_under_fair_turns(
    store: JobStore, clock: FakeClock
) -> None:
    _held_run_then_free(store, clock, fair=True)


def test_a_limit_that_fills_mid_claim_does_not_end_its_tenant_s_turns(
    store: JobStore, clock: FakeClock
) -> None:
    """Under fair turns a tenant's due jobs were read a claim's worth at a time: when
    all of those fell under a limit that filled with the first, the tenant's other
    jobs waited for the next claim, and while the limited jobs finished between claims
    (a type at concurrency 1 whose jobs are quick) they waited for its whole backlog."""
    add(store, clock, 20, type="slow", tenant="a", priority=5)
    add(store, clock, 5, type="fast", tenant="a")
    add(store, clock, 1, type="fast", tenant="b")
    policy = ClaimPolicy((Limit("type", "slow", concurrency=1),), fair=True)
    claimed = store.claim(10, LEASE, policy=policy)
    assert Counter((j.tenant, j.type) for j in claimed) == {
        ("a", "slow"): 1,
        ("a", "fast"): 5,
        ("b", "fast"): 1,
    }


def test_a_claim_reports_every_limit_it_found_full(store: JobStore, clock: FakeClock) -> None:
    """What spool_limit_full and spool_job_holds_total are made of: one hold with no job
    id per full limit. DynamoDB kept each held job id once per claim, "" included, so
    of two full limits only the first was reported: the other's gauge read 0 (and its
    counter stood still) while its jobs waited."""
    add(store, clock, 3, type="slow")
    add(store, clock, 3, queue="rq")
    policy = ClaimPolicy(
        (Limit("type", "slow", concurrency=1), Limit("queue", "rq", rate=Rate(1, 60)))
    )
    assert len(store.claim(10, LEASE, policy=policy)) == 2
    with policy.holds.watch() as holds:
        assert store.claim(10, LEASE, policy=policy) == []
    full = {(h.key, h.kind) for h in holds if not h.job_id}
    assert full == {("type:slow", "concurrency"), ("queue:rq", "rate")}


# -- held jobs meet the rest of the lifecycle (guards: these held on every store) -------


def test_a_limit_lowered_below_what_runs_starts_nothing_until_it_has_room(
    store: JobStore, clock: FakeClock
) -> None:
    add(store, clock, 10, type="r")
    assert (
        len(store.claim(10, LEASE, policy=ClaimPolicy((Limit("type", "r", concurrency=3),)))) == 3
    )
    lowered = ClaimPolicy((Limit("type", "r", concurrency=1),))
    assert store.claim(10, LEASE, policy=lowered) == []
    raised = ClaimPolicy((Limit("type", "r", concurrency=5),))
    assert len(store.claim(10, LEASE, policy=raised)) == 2


def test_held_jobs_cancel_redrive_and_retry_keep_their_attempts(
    store: JobStore, clock: FakeClock
) -> None:
    """A held job can be cancelled; a job redriven into a full limit waits like any
    other; a retry due while its limit is full waits without spending an attempt."""
    from datetime import timedelta

    ids = add(store, clock, 3, type="r", max_attempts=2)
    policy = ClaimPolicy((Limit("type", "r", concurrency=1),))
    [first] = store.claim(10, LEASE, policy=policy)
    held = [i for i in ids if i != first.id]
    assert store.cancel(held[0]).state is JobState.CANCELLED
    retry_at = clock.now() + timedelta(seconds=1)
    assert store.finish(
        [Completion(first.id, first.lease_token or "", JobState.RETRYING, retry_at=retry_at)]
    ) == [True]
    clock.advance(2)
    [second] = store.claim(10, LEASE, policy=policy)  # the retry or the other: one
    for _ in range(3):
        assert store.claim(10, LEASE, policy=policy) == []
    waiting = next(i for i in (first.id, held[1]) if i != second.id)
    assert stored(store, waiting).attempts == (1 if waiting == first.id else 0)
    dead = Completion(second.id, second.lease_token or "", JobState.DEAD, error="no")
    assert store.finish([dead]) == [True]
    [third] = store.claim(10, LEASE, policy=policy)
    assert third.id == waiting
    assert [j.id for j in store.redrive([second.id])] == [second.id]
    assert store.claim(10, LEASE, policy=policy) == []  # redriven into a full limit
    finish(store, third)
    [again] = store.claim(10, LEASE, policy=policy)
    assert again.id == second.id and again.attempts == 1


def test_a_negative_cost_gives_tokens_back_never_past_the_burst(
    store: JobStore, clock: FakeClock
) -> None:
    """A redrive takes a token per id named and gives back those of ids it did not
    move (Service.redrive_ids) as a take of -n: every store must add them, at once,
    and a bucket given back more than it lacked still holds only its burst."""
    assert store.take_tokens("tenant:g", 1 / 3600, 4, cost=4) == 0.0  # empty
    assert store.take_tokens("tenant:g", 1 / 3600, 4, cost=-3) == 0.0
    assert store.take_tokens("tenant:g", 1 / 3600, 4, cost=3) == 0.0  # the 3 are there
    assert store.take_tokens("tenant:g", 1 / 3600, 4) > 0  # and no more
    assert store.take_tokens("tenant:g", 1 / 3600, 4, cost=-10) == 0.0
    assert store.take_tokens("tenant:g", 1 / 3600, 4, cost=4) == 0.0  # the burst, no more
    assert store.take_tokens("tenant:g", 1 / 3600, 4) > 0
