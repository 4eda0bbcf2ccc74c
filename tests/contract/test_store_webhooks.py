"""The webhook outbox rules of the JobStore contract (storage/base.py), on every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import InvalidTransition
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore
from chalicelib.webhooks import outbox
from tests.backends import BACKENDS, open_backend
from tests.factories import new_job, token

LEASE = 30.0
URL = "https://hooks.example.com/spool"


def add(store: JobStore, clock: FakeClock, url: str | None = URL, **fields):
    return store.add([new_job(clock, callback_url=url, **fields)])[0].job


def claim_one(store: JobStore):
    [job] = store.claim(1, LEASE)
    return job


def finish(store: JobStore, job, state: JobState, **fields) -> bool:
    if state is JobState.RETRYING:
        fields.setdefault("retry_at", store.clock.now() + timedelta(seconds=5))
    return store.finish([Completion(job.id, job.lease_token, state, **fields)])[0]


def test_a_success_writes_one_pending_delivery(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, tenant="acme")
    running = claim_one(store)
    assert store.webhooks(job.id) == []  # nothing before the terminal transition
    assert finish(store, running, JobState.SUCCEEDED, result={"ok": 1})
    [d] = store.webhooks(job.id, "acme")
    assert d.id.startswith(outbox.ID_PREFIX) and len(d.id) == 36
    assert (d.job_id, d.tenant, d.url, d.event) == (job.id, "acme", URL, "job.succeeded")
    assert (d.state, d.attempts, d.lease_token, d.finished_at) == ("pending", 0, None, None)
    assert d.next_at == clock.now() and d.created_at == clock.now()
    assert store.webhook_counts() == {"pending": 1}


def test_no_callback_url_no_delivery(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, url=None)
    assert finish(store, claim_one(store), JobState.SUCCEEDED)
    assert store.webhooks(job.id) == []
    assert store.claim_webhooks(10, LEASE) == []
    assert store.webhook_counts() == {}


def test_a_retry_writes_none_and_death_writes_one(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, max_attempts=2)
    assert finish(store, claim_one(store), JobState.RETRYING, error="boom")
    assert store.webhooks(job.id) == []
    clock.advance(5)
    assert finish(store, claim_one(store), JobState.DEAD, error="boom again")
    assert [d.event for d in store.webhooks(job.id)] == ["job.dead"]


def test_a_refused_finish_writes_none(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    running = claim_one(store)
    stale = running.model_copy(update={"lease_token": "not-the-lease"})
    assert not finish(store, stale, JobState.SUCCEEDED)
    assert store.webhooks(job.id) == []
    assert finish(store, running, JobState.SUCCEEDED)
    assert not finish(store, running, JobState.SUCCEEDED)  # applied once only
    assert len(store.webhooks(job.id)) == 1


def test_a_batch_finish_writes_one_per_terminal_job(store: JobStore, clock: FakeClock) -> None:
    jobs = [add(store, clock, payload={"i": i}) for i in range(3)]
    plain = add(store, clock, url=None)
    running = store.claim(10, LEASE)
    assert len(running) == 4
    states = {jobs[0].id: JobState.SUCCEEDED, jobs[1].id: JobState.DEAD}
    completions = [
        Completion(
            j.id,
            token(j),
            states.get(j.id, JobState.RETRYING),
            retry_at=clock.now() + timedelta(seconds=9),
        )
        for j in running
    ]
    assert all(store.finish(completions))
    assert [d.event for d in store.webhooks(jobs[0].id)] == ["job.succeeded"]
    assert [d.event for d in store.webhooks(jobs[1].id)] == ["job.dead"]
    assert store.webhooks(jobs[2].id) == [] and store.webhooks(plain.id) == []


def test_a_reap_that_buries_writes_one(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, max_attempts=1)
    claim_one(store)
    clock.advance(LEASE + 1)
    assert store.claim(1, LEASE) == []  # the claim reaps: last attempt, so dead
    [d] = store.webhooks(job.id)
    assert d.event == "job.dead" and d.next_at == clock.now()


def test_a_reap_that_retries_writes_none(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, max_attempts=3)
    claim_one(store)
    clock.advance(LEASE + 1)
    assert len(store.claim(1, LEASE)) == 1
    assert store.webhooks(job.id) == []


def test_cancel_writes_one_and_a_refused_cancel_none(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    store.cancel(job.id)
    assert [d.event for d in store.webhooks(job.id)] == ["job.cancelled"]
    with pytest.raises(InvalidTransition):
        store.cancel(job.id)
    assert len(store.webhooks(job.id)) == 1


def test_claim_leases_and_counts_each_attempt(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    store.cancel(job.id)
    [d] = store.claim_webhooks(10, LEASE)
    assert (
        d.attempts == 1
        and d.lease_token
        and d.lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    )
    assert store.claim_webhooks(10, LEASE) == []  # leased: nobody else takes it
    clock.advance(LEASE)  # the worker died mid-delivery: the lease runs out
    [again] = store.claim_webhooks(10, LEASE)
    assert again.id == d.id and again.attempts == 2 and again.lease_token != d.lease_token
    assert not store.finish_webhook(d.id, token(d), "delivered")  # the old lease
    assert store.finish_webhook(again.id, token(again), "delivered")
    [done] = store.webhooks(job.id)
    assert (done.state, done.finished_at, done.next_at, done.lease_token) == (
        "delivered",
        clock.now(),
        None,
        None,
    )
    assert store.claim_webhooks(10, LEASE) == []
    assert not store.finish_webhook(again.id, token(again), "failed")
    assert store.webhook_counts() == {}  # delivered ones are not counted


def test_a_retry_waits_until_retry_at(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    store.cancel(job.id)
    [d] = store.claim_webhooks(1, LEASE)
    later = clock.now() + timedelta(seconds=10)
    assert store.finish_webhook(d.id, token(d), "retrying", later, "HTTP 503")
    [pending] = store.webhooks(job.id)
    assert (pending.state, pending.next_at, pending.lease_token, pending.last_error) == (
        "pending",
        later,
        None,
        "HTTP 503",
    )
    clock.advance(9)
    assert store.claim_webhooks(1, LEASE) == []
    clock.advance(1)
    [again] = store.claim_webhooks(1, LEASE)
    assert again.id == d.id and again.attempts == 2
    assert store.finish_webhook(again.id, token(again), "failed", error="gave up")
    [failed] = store.webhooks(job.id)
    assert (failed.state, failed.last_error, failed.attempts) == ("failed", "gave up", 2)
    assert store.webhook_counts() == {"failed": 1}


def test_claim_takes_the_earliest_due_first_under_a_limit(
    store: JobStore, clock: FakeClock
) -> None:
    first = add(store, clock)
    store.cancel(first.id)
    clock.advance(1)
    second = add(store, clock)
    store.cancel(second.id)
    [d] = store.claim_webhooks(1, LEASE)
    assert d.job_id == first.id
    [e] = store.claim_webhooks(5, LEASE)
    assert e.job_id == second.id


def test_deliveries_belong_to_their_tenant(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, tenant="acme")
    store.cancel(job.id)
    assert store.webhooks(job.id, "other") == []
    assert len(store.webhooks(job.id, "acme")) == 1
    assert store.webhooks("j_" + "0" * 32) == []


def test_each_terminal_transition_gets_its_own_delivery(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, max_attempts=1)
    assert finish(store, claim_one(store), JobState.DEAD, error="x")
    clock.advance(1)
    assert store.redrive([job.id])
    assert finish(store, claim_one(store), JobState.SUCCEEDED)
    first, second = store.webhooks(job.id)
    assert (first.event, second.event) == ("job.dead", "job.succeeded")
    assert first.id != second.id


def test_a_purge_takes_the_deliveries_with_the_job(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    keep = add(store, clock)
    store.cancel(job.id)
    clock.advance(10)
    store.cancel(keep.id)
    assert store.purge(clock.now() - timedelta(seconds=5)) == 1
    assert store.webhooks(job.id) == []
    assert [d.job_id for d in store.claim_webhooks(10, LEASE)] == [keep.id]


def test_an_unknown_outcome_is_a_programming_error(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock)
    store.cancel(job.id)
    [d] = store.claim_webhooks(1, LEASE)
    with pytest.raises(ValueError):
        store.finish_webhook(d.id, token(d), "exploded")


def test_a_job_keeps_its_last_finished_deliveries_and_every_owed_one(
    store: JobStore, clock: FakeClock
) -> None:
    """Cycling one job dead -> redrive -> dead must not grow its outbox without limit:
    each new delivery drops the job's finished ones beyond the newest
    outbox.KEPT_FINISHED, in its own write, and never a pending one (in flight under
    a lease, or owed a retry), which is still delivered afterwards."""
    job = add(store, clock, max_attempts=1)

    def die() -> None:
        clock.advance(1)
        assert finish(store, claim_one(store), JobState.DEAD, error="x")

    die()
    [in_flight] = store.claim_webhooks(1, 3600)  # a worker is delivering it, slowly
    store.redrive([job.id])
    die()
    [owed] = store.claim_webhooks(1, LEASE)  # the receiver was down: due again tomorrow
    tomorrow = clock.now() + timedelta(days=1)
    assert store.finish_webhook(owed.id, token(owed), "retrying", tomorrow, "503")
    finished = []
    for i in range(outbox.KEPT_FINISHED + 5):
        store.redrive([job.id])
        die()
        [d] = store.claim_webhooks(10, LEASE)
        outcome = "failed" if i % 3 == 0 else "delivered"
        assert store.finish_webhook(d.id, token(d), outcome, error="x")
        finished.append((d.id, outcome))
    store.redrive([job.id])
    die()  # its delivery's write drops the finished ones beyond the newest KEPT_FINISHED
    [newest] = [d for d in store.webhooks(job.id) if d.created_at == clock.now()]

    kept = finished[-outbox.KEPT_FINISHED :]
    listed = store.webhooks(job.id)
    assert [d.id for d in listed] == ([in_flight.id, owed.id] + [i for i, _ in kept] + [newest.id])
    assert [d.state for d in listed[2:-1]] == [outcome for _, outcome in kept]
    failed = sum(outcome == "failed" for _, outcome in kept)
    assert store.webhook_counts() == {"pending": 3, "failed": failed}

    # Every owed delivery is still delivered.
    assert store.finish_webhook(in_flight.id, token(in_flight), "delivered")
    [now_due] = store.claim_webhooks(10, LEASE)
    assert now_due.id == newest.id
    assert store.finish_webhook(now_due.id, token(now_due), "delivered")
    clock.advance(86400)
    [retried] = store.claim_webhooks(10, LEASE)
    assert retried.id == owed.id and retried.attempts == 2
    assert store.finish_webhook(retried.id, token(retried), "delivered")


KEPT = 4  # SPOOL_WEBHOOK_HISTORY for store_keeping_4: not the default


@pytest.fixture(params=BACKENDS)
def store_keeping_4(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Every backend opened with SPOOL_WEBHOOK_HISTORY=4."""
    monkeypatch.setenv("SPOOL_WEBHOOK_HISTORY", str(KEPT))
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield opened


def test_a_reap_and_a_cancel_drop_old_finished_deliveries_too(
    store_keeping_4: JobStore, clock: FakeClock
) -> None:
    """The other two transitions that write a delivery prune in the same write, to the
    number SPOOL_WEBHOOK_HISTORY sets (every store read it as a constant, 25)."""
    store = store_keeping_4
    job = add(store, clock, max_attempts=1)
    delivered = []
    for _ in range(KEPT + 3):
        clock.advance(1)
        claim_one(store)
        clock.advance(LEASE + 1)
        assert store.claim(1, LEASE) == []  # the claim reaps: last attempt, so dead
        [d] = store.claim_webhooks(10, LEASE)
        assert store.finish_webhook(d.id, token(d), "delivered")
        delivered.append(d.id)
        assert store.redrive([job.id])
    assert len(store.webhooks(job.id)) == KEPT + 1  # the reaps pruned
    clock.advance(1)
    store.cancel(job.id)
    *finished, cancelled = store.webhooks(job.id)
    assert [d.id for d in finished] == delivered[-KEPT:]
    assert (cancelled.event, cancelled.state) == ("job.cancelled", "pending")


TIED = 6  # deliveries of one job in one microsecond: write order is id order once in 720


def test_deliveries_written_in_one_microsecond_list_by_id(
    store: JobStore, clock: FakeClock
) -> None:
    """On a frozen clock one job's dead, redrive, dead... deliveries share a created_at:
    the listing orders those ties by id on every store, as it orders claims, whatever
    order they were written in."""
    job = add(store, clock, max_attempts=1)
    written = []
    for _ in range(TIED):
        assert finish(store, claim_one(store), JobState.DEAD, error="x")
        assert store.redrive([job.id])
        [newest] = [d for d in store.webhooks(job.id) if d.id not in written]
        written.append(newest.id)
    listed = store.webhooks(job.id)
    assert {d.created_at for d in listed} == {clock.now()}
    assert [d.id for d in listed] == sorted(written)


def test_a_prune_among_tied_deliveries_keeps_the_greatest_ids(
    store_keeping_4: JobStore, clock: FakeClock
) -> None:
    """Finished deliveries that share a created_at are newest by id (the listing's
    order), so a prune drops the least ids among them on every store."""
    store = store_keeping_4
    job = add(store, clock, max_attempts=1)
    finished = []
    for _ in range(KEPT + 4):
        assert finish(store, claim_one(store), JobState.DEAD, error="x")
        [d] = store.claim_webhooks(10, LEASE)
        assert store.finish_webhook(d.id, token(d), "delivered")
        finished.append(d.id)
        assert store.redrive([job.id])
    assert finish(store, claim_one(store), JobState.DEAD, error="x")  # this write prunes
    listed = store.webhooks(job.id)
    [pending] = [d.id for d in listed if d.state == outbox.PENDING]
    assert [d.id for d in listed] == sorted([*sorted(finished)[-KEPT:], pending])
