"""`spool --help`, `--version` and the job commands against a server load no engine.

`spool` imported the whole engine (pydantic's job models, the stores, the worker, the
scheduler) before it parsed its arguments: about a third of a second of every command,
the ones that only talk HTTP to a server (`spool status ID` with SPOOL_URL) included,
which need none of it. These run the real `spool` with Python's import profile on
(PYTHONPROFILEIMPORTTIME) and read the modules it loaded from its stderr.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib.models import Job
from local import remote_cli, status_view
from tests.apikit import KEY_A
from tests.procs import SPOOL, guarded_env
from tests.served import served

# The engine: what the local store's commands load, and the remote ones must not.
ENGINE = (
    "pydantic",
    "chalicelib.models",
    "chalicelib.storage",
    "chalicelib.service",
    "chalicelib.runtime",
    "chalicelib.worker",
    "chalicelib.periodic",
)

Spool = Callable[..., tuple[subprocess.CompletedProcess[str], set[str]]]


def loaded(stderr: str) -> set[str]:
    """The modules an import profile (`import time: self | cumulative | name`) names."""
    names = set()
    for row in stderr.splitlines():
        if row.startswith("import time:") and row.count("|") == 2:
            names.add(row.rsplit("|", 1)[1].strip())
    return names


def spool_in(tmp_path: Path, **env: str) -> Spool:
    """`spool ARGS...` with the import profile on: its answer and the modules it loaded."""

    def spool(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
        ran = subprocess.run(
            [str(SPOOL), *args],
            cwd=tmp_path,
            env=guarded_env(PYTHONPROFILEIMPORTTIME="1", **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return ran, loaded(ran.stderr)

    return spool


def engine_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] == "pydantic" or m in ENGINE)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["status", "--help"]])
def test_help_and_version_load_no_engine(tmp_path: Path, args: list[str]) -> None:
    ran, modules = spool_in(tmp_path)(*args)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "local.cli" in modules  # the profile is read: the command line was loaded
    assert engine_in(modules) == []


def test_remote_job_commands_load_no_engine(tmp_path: Path) -> None:
    """enqueue, status --json, jobs, cancel and dlq list against a real server."""
    with served(tmp_path) as server:
        spool = spool_in(tmp_path, SPOOL_URL=server.url, SPOOL_API_KEY=KEY_A)
        ran, modules = spool("enqueue", "sleep", "--payload", '{"seconds": 60}', "--json")
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert engine_in(modules) == []
        job_id = json.loads(ran.stdout)["id"]
        for args in (
            ["status", job_id, "--json"],
            ["jobs"],
            ["dlq", "list"],
            ["cancel", job_id],
        ):
            ran, modules = spool(*args)
            assert ran.returncode == 0, (args, ran.stderr[-2000:])
            assert "httpx" in modules  # it went to the server
            assert engine_in(modules) == [], args


def test_remote_status_table_loads_no_engine(tmp_path: Path) -> None:
    """`spool status ID` as a table read the server's answer through the pydantic job
    model; an answer of the shape a server sends is now read without it."""
    with served(tmp_path) as server:
        spool = spool_in(tmp_path, SPOOL_URL=server.url, SPOOL_API_KEY=KEY_A)
        ran, _ = spool("enqueue", "echo", "--json")
        assert ran.returncode == 0, ran.stderr[-2000:]
        ran, modules = spool("status", json.loads(ran.stdout)["id"])
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.startswith("job       j_")
        assert "type      echo (queue default, tenant (your key's), priority 0)" in ran.stdout
        assert engine_in(modules) == []


def test_the_plain_reading_names_every_field_of_the_job_model() -> None:
    assert list(remote_cli.JOB_FIELDS) == list(Job.model_fields)


ANSWER: dict[str, Any] = {
    "id": "j_01a24d2898e82d9544176d5c90229d2e",
    "type": "echo",
    "queue": "mail",
    "priority": -3,
    "state": "retrying",
    "attempts": 2,
    "max_attempts": 7,
    "payload": {"to": "a@example.com"},
    "result": None,
    "last_error": "ValueError: no \x1b[31mred\x1b[0m",
    "idempotency_key": None,
    "run_at": "2026-12-06T21:00:36.828+05:30",
    "created_at": "2026-12-06T21:00:36Z",
    "updated_at": "2026-12-06T21:00:37.000001+00:00",
    "started_at": None,
    "finished_at": "2026-12-06T21:00:38.5-01:00",
}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"result": {"n": [1, 2.5, None, True]}, "state": "succeeded"},
        {"tenant": "acme", "lease_token": None, "extra": "ignored"},
    ],
)
def test_a_server_shaped_answer_shows_as_the_model_shows_it(change: dict[str, Any]) -> None:
    raw = {**ANSWER, **change}
    plain = remote_cli._plain_job(raw)
    assert plain is not None
    model = remote_cli._as_job(raw)
    assert status_view.render(plain, [], tenant="t") == status_view.render(model, [], tenant="t")


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "5"},  # the model coerces it
        {"attempts": True},
        {"queue": None},  # the model refuses it
        {"state": "lost"},
        {"payload": []},
        {"run_at": "2026-12-06 21:00:36"},  # no offset
        {"created_at": "2026-02-30T00:00:00Z"},
        {"updated_at": 1765054836},
        {"lease_token": 5},  # a field not shown is held to the model too
        {"tenant": None},
    ],
)
def test_any_other_answer_is_read_by_the_model(change: dict[str, Any]) -> None:
    assert remote_cli._plain_job({**ANSWER, **change}) is None


@pytest.mark.parametrize("missing", ["queue", "priority", "finished_at", "updated_at", "id"])
def test_an_answer_missing_a_field_is_read_by_the_model(missing: str) -> None:
    raw = {k: v for k, v in ANSWER.items() if k != missing}
    assert remote_cli._plain_job(raw) is None


def test_a_refused_key_loads_no_engine(tmp_path: Path) -> None:
    """The most common remote failure (the key of an earlier `spool serve`): its words
    came from chalicelib.api.auth, which imported the service and pydantic to say it."""
    with served(tmp_path) as server:
        spool = spool_in(tmp_path, SPOOL_URL=server.url, SPOOL_API_KEY="key-from-yesterday-00")
        ran, modules = spool("jobs")
        assert ran.returncode == 2, ran.stderr[-2000:]
        assert "spool: invalid API key. Pass the server's key" in ran.stderr
        assert engine_in(modules) == []
