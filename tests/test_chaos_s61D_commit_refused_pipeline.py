"""A batch enqueue whose commit the database refuses after its rows were read.

Under `ALTER DATABASE ... SET lock_timeout = '1ms'` and load, the keyless batch
enqueue (one statement sent in pipeline mode, committed by the pipeline's Sync)
was cancelled at commit: the statement's NOTIFY takes a lock there, after the
statement's rows were sent. The error then surfaced in psycopg's pipeline exit,
which raised "cannot exit pipeline mode while busy" (answered as "the database
connection failed", sending operators to the network) or, now and then, an
IndexError from its own queue: POST /enqueue answered 500. Now the Sync is sent
inside the block, and the refusal is raised as what it is: "the database cancelled
the call (canceling statement due to lock timeout)", a 503.

The refusal at commit is made here by a deferred constraint trigger raising the
same SQLSTATE (55P03), in the test's own schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.clock import SystemClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.storage.postgres import connect, parse_url
from tests.factories import new_job
from tests.pg_support import fresh_schema

pytestmark = pytest.mark.timeout(60)

REFUSE = """
CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'canceling statement due to lock timeout' USING ERRCODE = '55P03';
END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON jobs
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
"""


@pytest.fixture
def refusing() -> Iterator[tuple[JobStore, object]]:
    with fresh_schema() as url:
        store = open_store(url, SystemClock())
        admin = connect(parse_url(url))
        admin.autocommit = True
        try:
            admin.execute(REFUSE)
            yield store, admin
        finally:
            admin.close()
            store.close()


@pytest.mark.parametrize("size", [2, 5])
def test_a_commit_refused_after_the_rows_is_said_as_cancelled(
    refusing: tuple[JobStore, object], size: int
) -> None:
    store, admin = refusing
    with pytest.raises(StoreUnavailable) as refused:
        store.add([new_job(store.clock) for _ in range(size)])
    # Before: "the database connection failed before it answered ..." (or a 500).
    assert refused.value.status == 503
    assert "cancelled the call (canceling statement due to lock timeout)" in (refused.value.message)
    assert store.counts() == {}  # nothing of the batch was stored
    admin.execute("DROP TRIGGER refuse_at_commit ON jobs")  # type: ignore[attr-defined]
    store.add([new_job(store.clock) for _ in range(size)])  # the store goes on
    assert sum(store.counts().values()) == size
