"""The result cache lets go of a Redis store's answers once the store was emptied.

Found by a chaos run (helper E, s48): `spool serve` on a Redis without
persistence; a job finished and its status was read twice (X-Cache: hit); the
redis-server was killed and started again, empty. `GET /status/<id>` went on
answering 200 "succeeded" from the cache (for up to SPOOL_CACHE_TTL, 300 s by
default) while `?attempts=true`, `/jobs` and every other route said the job
did not exist. The cache trusts a tenant's answers while its epoch reads the
same, and an emptied store reads a never-touched tenant's epoch as 0, which
is what it read before. The Redis store's epoch now differs from every value
it read before while its birth mark is not the one this process saw.

Emptying is done by deleting the test prefix's keys (what FLUSHDB or a restart
without persistence does to them); no timing is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib.api.cache import ResultCache
from chalicelib.clock import FakeClock
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job
from tests.redis_support import drop_prefix, fresh_prefix

TENANT = "default"


@pytest.fixture
def store() -> Iterator[RedisStore]:
    with fresh_prefix() as url:
        opened = from_url(url)
        try:
            yield opened
        finally:
            opened.close()


def _prefix(store: RedisStore) -> str:
    return store._p.removeprefix("{").split("}", 1)[0]


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "health-noticed-first"])
def test_an_emptied_store_empties_the_cache_at_the_next_check(
    store: RedisStore, noticed: bool
) -> None:
    """Whether or not /health (which marks the store again) looked first: in the real
    run /health answered between the restart and the status read."""
    clock = FakeClock(store.clock.now())
    [added] = store.add([new_job(clock)])
    cache = ResultCache(10, 600, epoch=store.cache_epoch, recheck=0)
    body = json.dumps({"id": added.job.id, "state": "succeeded"})
    assert cache.put(TENANT, added.job.id, body, cache.ticket(TENANT))
    assert cache.lookup(TENANT, added.job.id) == body

    drop_prefix(_prefix(store))  # a restart without persistence, or FLUSHDB
    assert store.get(added.job.id) is None
    if noticed:
        store.check_writable()  # logs the emptying and takes the new mark as seen

    assert cache.lookup(TENANT, added.job.id) is None


def test_the_epoch_of_a_store_never_emptied_is_unchanged(store: RedisStore) -> None:
    """The contract's zero for a tenant never touched still holds, and reads are stable."""
    assert store.cache_epoch(TENANT) == 0
    assert store.cache_epoch(TENANT) == 0


def test_after_an_emptying_the_epoch_still_moves_with_a_purge_or_redrive(
    store: RedisStore,
) -> None:
    """An emptied store's epoch must not freeze: a redrive after it is still seen."""
    drop_prefix(_prefix(store))
    before = store.cache_epoch(TENANT)
    store.client.hincrby(store._p + "te", TENANT, 1)  # what a redrive's script does
    assert store.cache_epoch(TENANT) != before
