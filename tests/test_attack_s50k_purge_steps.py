"""A dashboard purge of a tenant's dead jobs deletes them a step at a time.

Was (stop 50, found against `spool serve` on SQLite with 10^5 dead jobs of 20 KB):
`POST /ui/api/dead/purge` with `{"all": true}` deleted up to 5,000 jobs (or 1,000
named ids) in one store call, one write transaction: 1.1 s holding SQLite's write
lock, during which every other tenant's enqueue, claim and finish waited, and a
tenant repeating the purge (the page does, while `more` is true) kept the lock
busy one long transaction after another. The dashboard's bulk redrive already
moved its jobs READ_STEP at a time.

Now the purge deletes READ_STEP jobs per store call (each its own transaction), as
the redrive moves them: another tenant's write waits for one step, not the request.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib import runtime as runtime_module
from chalicelib.api.ui_routes import READ_STEP
from chalicelib.storage.sqlite import SQLiteStore
from local.server import Server
from tests.apikit import KEY_A, TENANT_A
from tests.factories import new_job
from tests.served import served

DEAD = 3 * READ_STEP + 7


def _dead_jobs(tmp_path: Path, n: int) -> list[str]:
    store = runtime_module.current().store
    added = store.add([new_job(store.clock, tenant=TENANT_A) for _ in range(n)])
    ids = [a.job.id for a in added]
    with sqlite3.connect(tmp_path / "spool.db") as db:  # dead without a worker
        db.executemany("UPDATE jobs SET state = 'dead' WHERE id = ?", [(i,) for i in ids])
    return ids


def _purge(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/ui/api/dead/purge",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": KEY_A, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer = json.load(reply)
    assert isinstance(answer, dict)
    return answer


@pytest.mark.parametrize("named", [False, True], ids=["all", "ids"])
def test_a_purge_deletes_at_most_a_step_per_store_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    calls: list[int] = []
    original = SQLiteStore.discard

    def counted(self: SQLiteStore, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        calls.append(len(job_ids))
        return original(self, job_ids, tenant)

    monkeypatch.setattr(SQLiteStore, "discard", counted)
    with served(tmp_path) as server:
        ids = _dead_jobs(tmp_path, DEAD)
        answer = _purge(server, {"ids": ids} if named else {"all": True})
    assert answer["done"] == DEAD and answer["more"] is False, answer
    assert sorted(answer["ids"]) == sorted(ids)
    assert calls and max(calls) <= READ_STEP, calls
