"""`spool dlq redrive --all` cut short by a failure (the database connection killed,
pg_terminate_backend, a server that answers 500): what it says, and running it again.

A bulk redrive commits a step at a time, so a failure part-way leaves the jobs of the
steps before it redriven. The command said only the failure ("this change may have
been applied"), not that N jobs were already redriven, nor the bound it had used; run
again, it took a new bound, and the jobs the first run redrove that had died again
meanwhile (a poison batch fails at once) were redriven a second time: each a fresh
set of attempts of a handler that fails. docs/client.md tells a client to send the
same `died_before` again; the command line had no way to.

Now the command names what it redrove and the bound before the failure's own line
(with --json, prints them too), and takes `--died-before` to run again under it.

`spool enqueue --count N` is cut short the same way, chunk by chunk, and its copies
carry no idempotency key: it now says how many it stored and the `--count` left.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.service import REDRIVE_STEP, Service
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.storage.sqlite import SQLiteStore
from local import cli, remote_cli
from tests.apikit import KEY_A, TENANT_A
from tests.redrive_support import claim, dead, fail_on_call, kill, local_cli, serving

RERUN = re.compile(r"spool dlq redrive --all .*--died-before (\S+)")


class Redriven:
    """Counts each job id the store redrives (what each call of the store moved)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        fail_at: int | None = None,
        failure: BaseException | None = None,
    ) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self.fail_at = fail_at
        self.failure = failure or StoreUnavailable("the database connection failed; try again")
        original = SQLiteStore.redrive

        def redrive(
            store: SQLiteStore, ids: Any, tenant: str | None = None, *more: Any, **kw: Any
        ) -> Any:
            self.calls += 1
            if self.calls == self.fail_at:
                raise self.failure
            moved = original(store, ids, tenant, *more, **kw)
            self.counts.update(job.id for job in moved)
            return moved

        monkeypatch.setattr(SQLiteStore, "redrive", redrive)


def _die_again(store: JobStore, clock: FakeClock, ids: list[str]) -> None:
    """The jobs just redriven run and fail at once (a poison batch), a second later."""
    clock.advance(1)
    kill(store, claim(store, ids), ids)
    clock.advance(1)


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeClock]]:
    yield local_cli(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "failure, code, said",
    [
        (None, 1, "the database connection failed"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["store-failure", "ctrl-c"],
)
def test_a_local_redrive_all_cut_short_says_what_it_did_and_a_rerun_redrives_none_twice(
    local_store: tuple[str, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: BaseException | None,
    code: int,
    said: str,
) -> None:
    url, clock = local_store
    store = open_store(url, clock)
    try:
        jobs = dead(store, clock, "default", 600)
        clock.advance(1)
        steps = 4
        redriven = Redriven(monkeypatch, fail_at=steps + 1, failure=failure)

        assert cli.main(["dlq", "redrive", "--all", "--json"]) == code
        out, err = capsys.readouterr()
        first = jobs[: steps * REDRIVE_STEP]
        assert set(redriven.counts) == set(first)
        printed = json.loads(out)
        assert printed["redriven"] == len(first) and printed["ids"] == first
        assert f"redriven {len(first)} job(s) before" in err
        assert said in err  # the failure's own line follows
        found = RERUN.search(err)
        assert found is not None, err
        assert datetime.fromisoformat(found[1]) == datetime.fromisoformat(printed["died_before"])

        _die_again(store, clock, first)  # before the operator runs it again
        redriven.fail_at = None
        assert cli.main(["dlq", "redrive", "--all", "--died-before", found[1], "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["ids"] == jobs[len(first) :]
        assert redriven.counts == dict.fromkeys(jobs, 1)  # every job once, none twice
    finally:
        store.close()


@pytest.mark.parametrize(
    "value, why",
    [
        ("2030-01-01T00:00:00", "offset"),
        ("yesterday", "ISO 8601"),
        ("2030-13-01T00:00:00Z", "ISO 8601"),
    ],
)
def test_a_died_before_that_is_no_aware_time_is_refused(
    local_store: tuple[str, FakeClock], capsys: pytest.CaptureFixture[str], value: str, why: str
) -> None:
    assert cli.main(["dlq", "redrive", "--all", "--died-before", value]) == 2
    assert why in capsys.readouterr().err


def test_died_before_goes_with_all_only(
    local_store: tuple[str, FakeClock], capsys: pytest.CaptureFixture[str]
) -> None:
    url, clock = local_store
    open_store(url, clock).close()
    argv = ["dlq", "redrive", "j_" + "0" * 32, "--died-before", "2030-01-01T00:00:00Z"]
    assert cli.main(argv) == 2
    assert "--died-before" in capsys.readouterr().err


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, JobStore, FakeClock]]:
    with serving(tmp_path, monkeypatch) as served:
        yield served


def test_a_remote_redrive_all_cut_short_says_what_it_did_and_a_rerun_redrives_none_twice(
    served: tuple[str, JobStore, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, store, clock = served
    jobs = dead(store, clock, TENANT_A, remote_cli.REDRIVE_CHUNK + 50)
    clock.advance(1)
    # The second POST /dlq/redrive: a 500, raised at once.
    fail_on_call(monkeypatch, Service, "redriving", 2, RuntimeError("planned failure"))
    redriven = Redriven(monkeypatch)
    argv = ["dlq", "redrive", "--all", "--json", "--queue", "default", "--url", url, "--key", KEY_A]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    first = remote_cli.REDRIVE_CHUNK
    said = json.loads(out)
    assert said["redriven"] == first and set(said["ids"]) == set(redriven.counts)
    assert f"redriven {first} job(s) before" in err
    found = RERUN.search(err)
    assert found is not None, err
    assert "--queue default" in found[0]

    _die_again(store, clock, said["ids"])
    assert cli.main([*argv, "--died-before", found[1]]) == 0
    capsys.readouterr()
    assert redriven.counts == dict.fromkeys(jobs, 1)


# -- the same for `spool enqueue --count N` --------------------------------------------

ENQUEUED = re.compile(r"enqueued (\d+) of (\d+) job\(s\) before it stopped.*--count (\d+)")


def test_a_local_enqueue_count_cut_short_says_how_many_are_stored(
    local_store: tuple[str, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The copies carry no idempotency key: run again whole, the command stored the
    chunks before the failure a second time, and it had not said how many there were."""
    url, clock = local_store
    open_store(url, clock).close()
    failure = StoreUnavailable("the database connection failed; try again")
    fail_on_call(monkeypatch, Service, "enqueue", 3, failure)
    count = 2 * cli.ENQUEUE_CHUNK + 100
    argv = ["enqueue", "echo", "--count", str(count), "--json"]
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    stored = 2 * cli.ENQUEUE_CHUNK
    assert len(json.loads(out)) == stored
    found = ENQUEUED.search(err)
    assert found is not None, err
    assert [int(n) for n in found.groups()] == [stored, count, count - stored]
    assert "the database connection failed" in err
    store = open_store(url, clock)
    try:
        assert sum(store.counts().values()) == stored
    finally:
        store.close()


def test_a_remote_enqueue_count_cut_short_says_how_many_are_stored(
    served: tuple[str, JobStore, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, store, _ = served
    # The fourth batch: a 500, raised at once.
    fail_on_call(monkeypatch, Service, "enqueue", 4, RuntimeError("planned failure"))
    count = 450
    argv = ["enqueue", "echo", "--count", str(count), "--json", "--url", url, "--key", KEY_A]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    stored = sum(store.counts().values())
    assert stored == 300  # three batches of the client's 100
    assert len(json.loads(out)) == stored
    found = ENQUEUED.search(err)
    assert found is not None, err
    assert [int(n) for n in found.groups()] == [stored, count, count - stored]
