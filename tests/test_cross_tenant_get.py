"""Another tenant's job reads as no job at all, whatever its record holds.

`get(job_id, tenant)` is what GET /status/{id} and the dashboard's job page ask: for
a job of another tenant it must answer as for an id that does not exist (None, so a
404 with the same body). On Postgres and Redis the whole record was decoded before
its tenant was compared: a job of another tenant cost its payload and result's JSON
decoding (up to 256 KiB each) where an unknown id cost nothing, and a record that
could not be decoded raised (a 500) for every tenant who asked for its id instead of
the 404 of an unknown id. Here the record is damaged on purpose: its owner's read
shows a `payload_unreadable` marker (the damage is there), and any other tenant's is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from tests.backends import open_backend
from tests.factories import new_job

NOT_JSON = "{not json"


def _damage(backend: str, store: Any, job_id: str) -> None:
    """Write a payload no JSON reader takes into the job's own record."""
    if backend == "sqlite":
        with store._write() as db:
            db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (NOT_JSON, job_id))
    elif backend == "postgres":
        store._run(
            lambda conn: conn.execute(
                "UPDATE jobs SET payload = %s WHERE id = %s", (NOT_JSON, job_id)
            )
        )
    else:
        store.client.hset(store._p + "j:" + job_id, "payload", NOT_JSON)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
def test_another_tenants_job_is_never_decoded_for_a_read(
    backend: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with open_backend(backend, clock, tmp_path, request) as store:
        job = store.add([new_job(clock, tenant="acme", payload={"secret": "x" * 1000})])[0].job
        _damage(backend, store, job.id)
        owned = store.get(job.id, "acme")  # the owner's read meets the damage: a marker
        assert owned is not None and owned.payload["error"] == "payload_unreadable"
        assert store.get(job.id, "other") is None  # another tenant: as if no such job
        assert store.get("j_" + "0" * 32, "other") is None
