"""Moving from SQLite to Postgres keeps every job the SQLite store holds.

docs/self-hosting.md told a team that ran `make run` on SQLite how to run on
Postgres, but not what becomes of the jobs still in the SQLite file when they
switch: queued ones, delayed ones, ones retrying later, dead letters, and finished
ones whose results clients still read. Nothing moves them; the new store starts
empty. The page now says how to switch ("Moving from SQLite"), and this test
follows it with real processes: migrate, start the Postgres worker and API, point
new work there, redrive the old dead letters and drain the old file with
`spool worker --no-schedule` until it lists nothing queued, retrying or running.
Every old job succeeds there, its result stays readable with the old store's URL,
and new jobs run on Postgres meanwhile.

`--no-schedule` is new: a worker draining the old store fired every periodic tick
into it as well, so each tick ran once per store while the drain lasted (found
following the procedure: the tick of 05:00 ran on SQLite and again on Postgres).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg_support
from tests.procs import guarded_env, spool_serve, stop
from tests.test_cli_errors import SPOOL

KEY = "s62i-move-to-postgres-key-0123456789"
SCHEDULES = '[{"name": "tick", "type": "echo", "every": "1h"}]'
HANDLERS = '''\
"""A handler that asks to be retried while the file `broken` beside it exists."""
from pathlib import Path

from chalicelib.errors import RetryAfter
from chalicelib.handlers import handler

BROKEN = Path(__file__).with_name("broken")


@handler("flaky")
def flaky(payload):
    if BROKEN.exists():
        raise RetryAfter(2)
    return {"ok": payload.get("n")}
'''


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_support.fresh_schema(migrate=False) as url:
        yield url


def _env(folder: Path, **extra: str) -> dict[str, str]:
    """Every process of both deployments: the same handlers and schedules."""
    env = guarded_env(
        SPOOL_HANDLERS="s62i_jobs", SPOOL_DEMO_HANDLERS="true", SPOOL_SCHEDULES=SCHEDULES
    )
    env.pop("SPOOL_STORE_URL", None)  # `make run`'s: .spool/spool.db in the folder
    env["PYTHONPATH"] = f"{folder}:{env.get('PYTHONPATH', '')}"
    return {**env, **extra}


def _spool(folder: Path, *argv: str, **env: str) -> str:
    done = subprocess.run(
        [str(SPOOL), *argv],
        cwd=folder,
        env=_env(folder, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def _jobs(folder: Path, state: str | None = None, **env: str) -> list[dict[str, object]]:
    argv = ["jobs", "--all", "--json"] + (["--state", state] if state else [])
    # --all prints one JSON page per line of pages; each holds "jobs".
    out = _spool(folder, *argv, **env)
    decoder, jobs, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        page, at = decoder.raw_decode(out, at)
        jobs.extend(page["jobs"])
        while at < len(out) and out[at].isspace():
            at += 1
    return jobs


def _by_state(folder: Path, **env: str) -> dict[str, str]:
    return {str(job["id"]): str(job["state"]) for job in _jobs(folder, **env)}


def _waiting_or_running(folder: Path) -> list[dict[str, object]]:
    """The page's check: what `spool jobs --state` lists as queued, retrying, running."""
    return [job for state in ("queued", "retrying", "running") for job in _jobs(folder, state)]


def _enqueue(folder: Path, *argv: str, **env: str) -> str:
    return str(json.loads(_spool(folder, "enqueue", *argv, "--json", **env))["id"])


def _get(url: str) -> int:
    request = urllib.request.Request(url, headers={"X-API-Key": KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_switching_to_postgres_as_documented_loses_no_job_of_the_sqlite_store(
    tmp_path: Path, pg_url: str
) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "s62i_jobs.py").write_text(HANDLERS)
    broken = folder / "broken"

    # Months on SQLite: a job done (its result still read), a tick fired, one
    # retrying later, a dead letter, two queued and one delayed.
    done = _enqueue(folder, "echo", "--payload", '{"n": 0}')
    _spool(folder, "worker", "--burst", "--quiet")
    broken.touch()
    retrying = _enqueue(folder, "flaky", "--payload", '{"n": 1}', "--max-attempts", "5")
    dead = _enqueue(folder, "flaky", "--payload", '{"n": 2}', "--max-attempts", "1")
    _spool(folder, "worker", "--burst", "--quiet")
    queued = [_enqueue(folder, "echo", "--payload", json.dumps({"n": n})) for n in (3, 4)]
    delayed = _enqueue(folder, "echo", "--payload", '{"n": 5}', "--delay", "2")
    broken.unlink()
    before = _by_state(folder)
    ticks = set(before) - {done, retrying, dead, delayed, *queued}
    assert len(ticks) == 1  # the schedule's tick, as on every store
    assert before[done] == "succeeded" and before[retrying] == "retrying"
    assert before[dead] == "dead"
    assert [before[j] for j in [*queued, delayed]] == ["queued"] * 3

    # 1-3 of the page: migrate, then the new store's workers and API.
    pg = {"SPOOL_STORE_URL": pg_url}
    _spool(folder, "db", "migrate", **pg)
    new_worker = subprocess.Popen(
        [str(SPOOL), "worker", "--quiet"],
        cwd=folder,
        env=_env(folder, **pg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = spool_serve("--no-worker", env=_env(folder, SPOOL_API_KEYS=f"{KEY}=acme", **pg))
    drain: subprocess.Popen[str] | None = None
    try:
        new_job = _enqueue(folder, "echo", "--payload", '{"n": 6}', **pg)
        # The new API knows nothing of the old store's jobs: its clients read them
        # from the old file (below).
        assert _get(f"{api.url}/status/{done}") == 404

        # 4: the old store's dead letters back to queued, then a worker drains it
        # without firing schedules, until it lists nothing waiting or running.
        _spool(folder, "dlq", "redrive", "--all")
        drain = subprocess.Popen(
            [str(SPOOL), "worker", "--no-schedule"],
            cwd=folder,
            env=_env(folder),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        left = _waiting_or_running(folder)
        deadline = time.monotonic() + 90
        while left and time.monotonic() < deadline:
            time.sleep(0.5)  # a poll of the documented check, not an assertion
            left = _waiting_or_running(folder)
        assert not left, left
        draining, drain = drain, None
        draining.terminate()
        _, drain_err = draining.communicate(timeout=60)
        assert draining.returncode == 0, drain_err
        assert "schedules off (--no-schedule)" in drain_err
        assert _spool(folder, "status", new_job, "--wait", "60", **pg)
    finally:
        if drain is not None:
            stop(drain)
        stop(api.proc)
        stop(new_worker)

    after = _by_state(folder)
    assert set(after) == set(before)  # no tick fired into the old store while it drained
    assert all(after[job] == "succeeded" for job in after), after
    for job, n in [(retrying, 1), (dead, 2), (queued[0], 3), (delayed, 5)]:
        shown = json.loads(_spool(folder, "status", job, "--json"))
        assert shown["state"] == "succeeded"
        assert shown["result"] in ({"ok": n}, {"n": n})
    assert _by_state(folder, **pg)[new_job] == "succeeded"


def test_a_worker_with_no_schedule_fires_no_tick(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "s62i_jobs.py").write_text(HANDLERS)
    _spool(folder, "worker", "--burst", "--quiet", "--no-schedule")
    assert _jobs(folder) == []
    _spool(folder, "worker", "--burst", "--quiet")
    assert [job["tenant"] for job in _jobs(folder)] == ["_system"]
