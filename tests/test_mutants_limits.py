"""chalicelib/limits.py: what `make mutation` found untested.

Written against the 40 mutants `make mutation MUTANTS='chalicelib.limits*'` left
alive and the one no test reached (docs/testing.md): the bounds of a rate, a
concurrency and a weight (the largest allowed, exactly one day, exactly 1 ms,
`True` and 0 as a concurrency, 0 and `True` as a weight), two limits on one key,
the exact refusals, `str(Rate)`; the kind ("rate") and key a claim's holds name,
including the hold that says a limit was full before the claim began; a store
that sends no count for a rate limit without starts; the room each admitted job
takes (`Admission.taken`, which DynamoDB's claim writes back: its tests run in
moto, outside the mutation selection); and a token bucket after the clock stepped
back by more than STEP_BACK, and by exactly STEP_BACK.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import (
    MAX_CONCURRENCY,
    MAX_RATE_COUNT,
    MAX_WEIGHT,
    STEP_BACK,
    Admission,
    ClaimPolicy,
    Hold,
    Limit,
    Rate,
)
from chalicelib.storage.base import JobStore
from tests.factories import new_job

LEASE = 30.0
DURATION_HELP = "is not a duration like 90, '90s', '15m', '2h', '1d', '1w' or '1h30m'"


def refused(message: str):
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# -- Rate --------------------------------------------------------------------------


def test_a_rate_takes_its_largest_count_and_windows_of_exactly_1_ms_and_one_day() -> None:
    assert Rate(MAX_RATE_COUNT, 1.0).count == 10_000
    assert Rate(1, 0.001).per == 0.001
    assert Rate(1, 86400).per == 86400
    assert Rate.parse("2/24h") == Rate(2, 86400.0)
    with refused(f"a rate's count must be 1 to {MAX_RATE_COUNT}, not 10001"):
        Rate(MAX_RATE_COUNT + 1, 1.0)
    for per in (86400.5, 86401, 0.0009, 0.0, float("inf"), float("nan")):
        with refused("a rate's window must be from 0.001s (1 ms) to 1d (one day)"):
            Rate(1, per)


def test_a_rate_that_is_not_text_or_not_a_duration_is_refused_saying_so() -> None:
    for value, name in ((10, "int"), (None, "NoneType"), (b"10/s", "bytes")):
        with refused(f"a rate is text such as '10/s', not {name}"):
            Rate.parse(value)  # type: ignore[arg-type]
    with refused(f"'5/fortnight': 'fortnight' {DURATION_HELP}"):
        Rate.parse("5/fortnight")
    with refused("'5/' is not a rate: write it as count/window, e.g. '10/s'"):
        Rate.parse("5/")


def test_a_rate_reads_back_as_count_slash_seconds() -> None:
    assert str(Rate.parse("10/s")) == "10/1s"
    assert str(Rate.parse("5/10s")) == "5/10s"
    assert str(Rate.parse("3/1.5m")) == "3/90s"
    assert str(Rate(3, 0.5)) == "3/0.5s"
    for rate in (Rate(10, 1.0), Rate(3, 0.5), Rate(2, 86400.0), Rate(7, 0.001)):
        assert Rate.parse(str(rate)) == rate


# -- Limit -------------------------------------------------------------------------


def test_a_limit_is_refused_with_its_exact_reason() -> None:
    with refused("a limit applies to a queue or a type, not 'tenant'"):
        Limit("tenant", "x", concurrency=1)  # type: ignore[arg-type]
    with refused("a limit needs the name of its queue or type"):
        Limit("type", "", concurrency=1)
    with refused("the limit on queue 'mail' sets neither concurrency nor rate"):
        Limit("queue", "mail")


@pytest.mark.parametrize(
    "concurrency",
    [True, False, 0, -1, MAX_CONCURRENCY + 1, 2.0, "2"],
    ids=["true", "false", "zero", "negative", "over", "float", "text"],
)
def test_a_concurrency_that_is_not_a_whole_number_in_range_is_refused(concurrency: object) -> None:
    with refused(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}"):
        Limit("type", "x", concurrency=concurrency)  # type: ignore[arg-type]


def test_a_concurrency_of_one_and_of_the_maximum_are_limits() -> None:
    assert Limit("type", "x", concurrency=1).concurrency == 1
    assert Limit("type", "x", concurrency=MAX_CONCURRENCY).concurrency == 1_000_000


# -- ClaimPolicy -------------------------------------------------------------------


def test_two_limits_on_one_queue_or_type_are_refused_but_one_of_each_scope_is_not() -> None:
    with refused("two limits for type 'resize': merge them"):
        ClaimPolicy(
            (Limit("type", "resize", concurrency=1), Limit("type", "resize", rate=Rate(1, 1)))
        )
    policy = ClaimPolicy(
        (Limit("type", "resize", concurrency=1), Limit("queue", "resize", concurrency=1))
    )
    assert len(policy.limits) == 2


@pytest.mark.parametrize(
    "weight",
    [0, -1, MAX_WEIGHT + 1, True, 2.5, "2"],
    ids=["zero", "negative", "over", "true", "float", "text"],
)
def test_a_weight_that_is_not_a_whole_number_in_range_is_refused(weight: object) -> None:
    with refused(f"tenant 'acme': a weight is a whole number from 1 to {MAX_WEIGHT}"):
        ClaimPolicy(fair=True, weights={"acme": weight})  # type: ignore[dict-item]


def test_a_weight_of_one_and_of_the_maximum_are_weights() -> None:
    policy = ClaimPolicy(fair=True, weights={"a": 1, "b": MAX_WEIGHT})
    assert (policy.weight("a"), policy.weight("b"), policy.weight("c")) == (1, 1000, 1)


# -- what a claim says it held (every store) ----------------------------------------


def _add(store: JobStore, clock: FakeClock, n: int, type_: str = "resize") -> list[str]:
    return [r.job.id for r in store.add([new_job(clock, type_) for _ in range(n)])]


def test_a_claim_that_finds_a_concurrency_limit_full_says_so_under_its_key(
    store: JobStore, clock: FakeClock
) -> None:
    _add(store, clock, 3)
    policy = ClaimPolicy((Limit("type", "resize", concurrency=1),))
    assert len(store.claim(10, LEASE, policy=policy)) == 1
    with policy.holds.watch() as holds:
        assert store.claim(10, LEASE, policy=policy) == []
    # Full before the claim looked at a job: the hold without a job names the limit
    # (the worker's spool_limit_full and the SQS hand-back read it).
    assert Hold("", "type:resize", "concurrency") in holds
    assert {(h.key, h.kind) for h in holds} == {("type:resize", "concurrency")}


def test_a_claim_held_by_a_rate_names_the_rate(store: JobStore, clock: FakeClock) -> None:
    _add(store, clock, 3)
    policy = ClaimPolicy((Limit("type", "resize", rate=Rate(1, 60.0)),))
    with policy.holds.watch() as holds:
        assert len(store.claim(10, LEASE, policy=policy)) == 1
    assert Hold("", "type:resize", "rate") in holds  # the start that filled it
    assert {(h.key, h.kind) for h in holds} == {("type:resize", "rate")}
    with policy.holds.watch() as holds:
        assert store.claim(10, LEASE, policy=policy) == []
    assert Hold("", "type:resize", "rate") in holds  # full before the claim began
    assert {(h.key, h.kind) for h in holds} == {("type:resize", "rate")}


@pytest.mark.parametrize(
    "concurrency, rate, kind",
    [(5, Rate(1, 60.0), "rate"), (1, Rate(5, 60.0), "concurrency")],
    ids=["rate-tighter", "concurrency-tighter"],
)
def test_a_limit_with_both_names_the_one_with_less_room(
    store: JobStore, clock: FakeClock, concurrency: int, rate: Rate, kind: str
) -> None:
    _add(store, clock, 3)
    policy = ClaimPolicy((Limit("type", "resize", concurrency=concurrency, rate=rate),))
    assert len(store.claim(10, LEASE, policy=policy)) == 1
    with policy.holds.watch() as holds:
        assert store.claim(10, LEASE, policy=policy) == []
    assert {(h.key, h.kind) for h in holds} == {("type:resize", kind)}


# -- Admission: what a store hands in and reads back -----------------------------------


def test_a_rate_limit_the_store_sent_no_count_for_has_no_starts() -> None:
    policy = ClaimPolicy((Limit("type", "x", rate=Rate(2, 1.0)),))
    admission = Admission(policy, running={}, started={})
    assert [admission.admit(f"j{i}", "q", "x") for i in range(3)] == [True, True, False]
    assert admission.full_keys() == ["type:x"]


def test_admission_counts_the_room_each_admitted_job_took_under_each_key() -> None:
    """DynamoDB's claim writes `taken` back (running ids, and one start entry of `taken`
    starts): a count off by one there lets a concurrency or a rate limit be passed."""
    policy = ClaimPolicy(
        (
            Limit("queue", "q", concurrency=10),
            Limit("type", "x", rate=Rate(10, 1.0)),
            Limit("type", "y", concurrency=10),
        )
    )
    admission = Admission(policy, running={"queue:q": 4}, started={"type:x": 1})
    assert admission.taken == {}
    for i in range(3):
        assert admission.admit(f"x{i}", "q", "x")
    assert admission.admit("y0", "other", "y")
    assert admission.taken == {"queue:q": 3, "type:x": 3, "type:y": 1}


# -- token buckets after the wall clock stepped back ------------------------------------


def test_a_bucket_stamped_over_a_step_ahead_refills_nothing_for_it(
    store: JobStore, clock: FakeClock
) -> None:
    assert store.take_tokens("enqueue:acme", 2.0, 2, cost=2) == 0.0  # emptied
    clock.advance(-(STEP_BACK + 60))
    # Refilling goes on from now: the step earns no tokens (it is no time passing).
    assert store.take_tokens("enqueue:acme", 2.0, 2) == 0.5
    clock.advance(0.5)
    assert store.take_tokens("enqueue:acme", 2.0, 2) == 0.0  # one token in 0.5 s from now


def test_a_bucket_stamped_exactly_a_step_ahead_is_a_take_that_read_the_clock_early(
    store: JobStore, clock: FakeClock
) -> None:
    assert store.take_tokens("enqueue:acme", 2.0, 2, cost=2) == 0.0  # emptied at t
    clock.advance(-STEP_BACK)
    assert store.take_tokens("enqueue:acme", 2.0, 2) == 0.5
    clock.advance(0.5)  # t - 0.5: still before the bucket's stamp, nothing refilled
    assert store.take_tokens("enqueue:acme", 2.0, 2) == 0.5


def test_the_window_bounds_named_in_the_refusal_are_written_as_it_names_them() -> None:
    # The refusal names its bounds as a rate's window is written: both ends parse.
    assert Rate.parse("5/0.001s").per == 0.001
    assert Rate.parse("5/1d").per == 86400
    with refused("a rate's window must be from 0.001s (1 ms) to 1d (one day)"):
        Rate.parse("5/0.0009s")
