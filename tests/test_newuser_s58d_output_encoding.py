"""`spool` prints its views on a terminal that is not UTF-8, escaping what it cannot show.

Found by a new user's pass (s58, helper D): with a standard output in ASCII or
Latin-1 (`PYTHONIOENCODING`, a non-UTF-8 `LC_ALL` such as en_US.ISO-8859-1, a
Windows console's output sent to a file), `spool top --once` failed on its own
sparkline (`█`) with "unexpected error: UnicodeEncodeError ... Rerun with
SPOOL_DEBUG=1", whatever the store held; `spool jobs`, `spool dlq list` and
`spool status` did the same for a job whose payload, result or error holds any
character past the encoding. Against a server (`--url`), `spool status` said "an
argument holds bytes that are not UTF-8 text" (exit 2) about an argument that was
plain ASCII. Now what the encoding cannot hold is printed as a backslash escape
(`\\xe9`), and the command does what it was asked (exit 0); `--json` was and stays
ASCII.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.procs import run_spool as spool
from tests.served import post

TEXT = "échec ☃"  # past ASCII (é, also Latin-1) and past Latin-1 (☃)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store holding a dead job whose payload and error hold TEXT."""
    where = tmp_path_factory.mktemp("store")
    payload = json.dumps({"always": True, "message": TEXT})
    made = spool(where, "enqueue", "fail", "--payload", payload, "--max-attempts", "1")
    assert made.returncode == 0, made.stderr
    ran = spool(where, "worker", "--burst", "--quiet")
    assert ran.returncode == 0, ran.stderr
    return where


def _dead_id(folder: Path) -> str:
    listed = spool(folder, "jobs", "--state", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    return str(json.loads(listed.stdout)["jobs"][0]["id"])


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("command", [["jobs"], ["dlq", "list"], ["top", "--once"], ["status"]])
def test_a_view_prints_on_a_terminal_that_cannot_show_every_character(
    folder: Path, command: list[str], encoding: str
) -> None:
    argv = [*command, _dead_id(folder)] if command == ["status"] else command
    result = spool(folder, *argv, PYTHONIOENCODING=encoding)
    assert result.returncode == 0, result.stderr
    assert "unexpected error" not in result.stderr and "Traceback" not in result.stderr
    if command != ["top", "--once"]:  # its table holds counts, not the job's text
        shown = "\\xe9chec" if encoding == "ascii" else "échec"
        assert shown in result.stdout or "\\u00e9chec" in result.stdout, result.stdout


def test_a_servers_job_prints_on_an_ascii_terminal(server: Server, tmp_path: Path) -> None:
    body = json.dumps({"type": "echo", "payload": {"message": TEXT}}).encode()
    status, answer = post(server, "/enqueue", body)
    assert status == 201, answer
    # The served store (tests.apikit.settings_for's file), run by a worker beside it.
    ran = spool(tmp_path, "worker", "--burst", SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db")
    assert ran.returncode == 0, ran.stderr
    url = f"http://127.0.0.1:{server.port}"
    result = spool(
        tmp_path, "status", answer["id"], "--url", url, "--key", KEY_A, PYTHONIOENCODING="ascii"
    )
    assert result.returncode == 0, result.stderr
    assert "not UTF-8" not in result.stderr
    assert answer["id"] in result.stdout and "\\xe9chec \\u2603" in result.stdout
