"""`spool enqueue` runs a handler's admit check once, not twice or three times.

The check (admit(payload, tenant), chalicelib/handlers.py) ran in the CLI's own check
of the job, then again in the service's build of it, and, when the SQLite file did not
exist yet, once more on the memory store that check used first. An admit hook with an
effect, a quota each admitted job spends, spent two or three units for one job and
refused a tenant with room for one its one job. POST /enqueue runs it once a job.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env

METERED = '''
import os
from pathlib import Path

from chalicelib.handlers import handler

LOG = Path(os.environ["METER_LOG"])


def admit(payload, tenant):
    """Spend one unit of the tenant's quota: a line in METER_LOG per call."""
    with LOG.open("a", encoding="utf-8") as out:
        out.write(tenant + "\\n")
    if len(LOG.read_text(encoding="utf-8").splitlines()) > int(os.environ["METER_QUOTA"]):
        raise ValueError("the tenant's quota is spent")


@handler("metered", admit=admit)
def metered(payload):
    return None
'''


def _enqueue(tmp_path: Path, quota: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}",
        SPOOL_HANDLERS="metered",
        METER_LOG=str(tmp_path / "admitted.log"),
        METER_QUOTA=str(quota),
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "enqueue", "metered", "--tenant", "acme", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _admitted(tmp_path: Path) -> list[str]:
    return (tmp_path / "admitted.log").read_text(encoding="utf-8").splitlines()


def _stored(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "spool.db") as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.mark.parametrize("store", ["new", "existing"])
def test_one_enqueue_spends_one_unit_of_an_admit_quota(tmp_path: Path, store: str) -> None:
    """Before: 3 calls on a new store, 2 on an existing one, and "quota is spent"."""
    (tmp_path / "metered.py").write_text(METERED, encoding="utf-8")
    if store == "existing":
        first = _enqueue(tmp_path, 10)
        assert first.returncode == 0, first.stderr
        (tmp_path / "admitted.log").unlink()
    done = _enqueue(tmp_path, 1)
    assert done.returncode == 0, done.stderr
    assert _admitted(tmp_path) == ["acme"]
    assert _stored(tmp_path) == (2 if store == "existing" else 1)


def test_a_refused_job_is_still_refused_in_one_line_and_stores_nothing(tmp_path: Path) -> None:
    (tmp_path / "metered.py").write_text(METERED, encoding="utf-8")
    done = _enqueue(tmp_path, 0)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("spool: ") and "the tenant's quota is spent" in line, line
    # The job is fine; the tenant's quota is what refuses it (stop 59: not "Fix the job").
    assert line.endswith("admit check refuses this job for tenant 'acme' (--tenant): "
                         "change what its reason names."), line  # fmt: skip
    assert _admitted(tmp_path) == ["acme"]
    assert not (tmp_path / "spool.db").exists()


def test_count_copies_of_one_job_are_admitted_once(tmp_path: Path) -> None:
    """`--count N` enqueues N copies of one job for one tenant: one command, one admit
    (before: N + 1, or N + 2 on a new store)."""
    (tmp_path / "metered.py").write_text(METERED, encoding="utf-8")
    done = _enqueue(tmp_path, 1, "--count", "3")
    assert done.returncode == 0, done.stderr
    assert _admitted(tmp_path) == ["acme"]
    assert _stored(tmp_path) == 3
