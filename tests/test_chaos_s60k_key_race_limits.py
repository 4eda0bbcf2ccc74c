"""A repeat of an idempotency key that another API process stored while this one
was counting is answered with the job, not 429 (stop 60).

Reproduced with twenty requests under one key sent at once to `spool serve
--processes 2` with a tenant limit of burst 1 or backlog 1: on Postgres, Redis and
DynamoDB (moto) a few were answered 429 (the bucket's one token, or the backlog's
one place, taken by the first request, whose job was stored by then) while
docs/settings.md says a repeat "is answered even past the limits". Here two gates
over one store play the two processes: the second reads the key as not stored,
then the first stores it before the second is admitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.throttle import EnqueueGate
from chalicelib.handlers import Registry
from chalicelib.limit_settings import TenantLimit, TenantLimits
from chalicelib.limits import Rate
from chalicelib.models import AddResult
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.sqlite import SQLiteStore

LIMITS = {
    "rate": TenantLimit(rate=Rate(1, 3600.0), burst=1),
    "backlog": TenantLimit(backlog=1),
}


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_a_repeat_stored_by_another_process_meanwhile_is_answered(
    tmp_path: Path, limit: str
) -> None:
    registry = Registry()
    registry.handler("echo")(lambda payload: payload)
    first_store = SQLiteStore(str(tmp_path / "q.db"))
    second_store = SQLiteStore(str(tmp_path / "q.db"))
    limits = TenantLimits(TenantLimit(), {"t": LIMITS[limit]})
    first = EnqueueGate(first_store, limits)
    second = EnqueueGate(second_store, limits)
    job = EnqueueRequest(type="echo", delay=3600, idempotency_key="order-7")

    def enqueue(gate: EnqueueGate, store: SQLiteStore) -> AddResult:
        stored: list[AddResult] = []
        service = Service(store, registry)
        built = service.prepare([job], "t")
        with gate.admitted("t", ["order-7"], stored, [built[0].id]) as cap:
            [result] = service.add_prepared([job], built, cap, stored)
        return result

    real_get = second_store.get_by_key
    stored_first: list[AddResult] = []

    def read_then_lose_the_race(tenant: str, key: str) -> Any:
        found = real_get(tenant, key)
        if not stored_first:  # the first process stores the key just after this read
            stored_first.append(enqueue(first, first_store))
        return found

    second_store.get_by_key = read_then_lose_the_race  # type: ignore[method-assign,assignment]
    again = enqueue(second, second_store)
    assert stored_first[0].created
    assert not again.created and again.job.id == stored_first[0].job.id
    assert sum(first_store.state_counts("t").values()) == 1
    first_store.close()
    second_store.close()
