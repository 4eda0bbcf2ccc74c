"""`--key` with no server to send it to is refused, not dropped.

A job command goes to a server only with --url or SPOOL_URL; without either it
works on the local store, and a --key typed with it was dropped without a word:
`spool enqueue echo --key KEY` (SPOOL_URL not exported in this terminal) stored the
job in the local SQLite file under tenant `default`, and `spool jobs --key KEY`
listed every tenant's local jobs, while the user meant their server and their
key's tenant. Now it is exit 2, naming the missing --url, and nothing is opened.
SPOOL_API_KEY alone is left alone: an exported variable is not a request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_newuser import run

KEY = "k" * 20


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["enqueue", "echo", "--key", KEY],
        ["--key", KEY, "enqueue", "echo"],
        ["jobs", "--key", KEY],
        ["status", "j_1", "--key", KEY],
        ["dlq", "list", "--key", KEY],
    ],
)
def test_a_key_without_a_server_is_refused_and_nothing_is_stored(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("spool: --key is a server's API key, but no server is named"), err
    assert "--url" in err and "SPOOL_URL" in err and KEY not in err
    assert not db.exists()


def test_an_exported_key_alone_still_works_on_the_local_store(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_API_KEY", KEY)
    code, out, err = run(capsys, "enqueue", "echo", "--json")
    assert code == 0, err
    assert json.loads(out)["tenant"] == "default"
