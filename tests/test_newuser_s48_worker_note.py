"""`spool worker` run with SPOOL_URL exported says which store it works on.

Found following the README: after `export SPOOL_URL=... SPOOL_API_KEY=...` (as
`make run` prints it), `spool worker` in another folder made a new SQLite store
there and ran nothing, with "done: 0 succeeded" and no word that it had not asked
the server at SPOOL_URL, while `spool top`, `spool schedules` and `spool purge`
print a note saying so (tests/test_cli_newuser.py). A worker never follows
SPOOL_URL; now it says so too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local import cli


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_a_worker_with_spool_url_set_notes_the_store_it_works_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quiet: list[str],
) -> None:
    db = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SPOOL_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SPOOL_API_KEY", "dev-key-of-sixteen-chars")
    assert cli.main(["worker", "--burst", *quiet]) == 0
    note = (
        "spool: note: `spool worker` works on the local store named by SPOOL_STORE_URL "
        f"(sqlite:///{db}), not on the server at SPOOL_URL."
    )
    assert note in capsys.readouterr().err.splitlines()
    monkeypatch.delenv("SPOOL_URL")
    assert cli.main(["worker", "--burst", *quiet]) == 0
    assert "note:" not in capsys.readouterr().err


ON_THE_SERVER = re.compile(r"\bon the server\b")
NOT_ON_THE_SERVER = re.compile(r"\bnot on the server\b")
DOCS = [Path(__file__).resolve().parent.parent / "README.md"]
DOCS += sorted((DOCS[0].parent / "docs").glob("*.md"))


def test_no_doc_says_a_local_only_command_works_on_the_server() -> None:
    """docs/dashboard.md said "`spool schedules` lists them on the server": it lists the
    schedules of the machine it runs on (its settings and handler modules), and with
    SPOOL_URL set it notes that it does not ask the server."""
    from local.remote_cli import LOCAL_ONLY

    said = []
    for doc in DOCS:
        text = " ".join(doc.read_text(encoding="utf-8").split())
        for sentence in text.split(". "):
            for command in LOCAL_ONLY:
                # Whole words: "a session the server ended" holds "on the server".
                told = f"`spool {command}`" in sentence and ON_THE_SERVER.search(sentence)
                if told and not NOT_ON_THE_SERVER.search(sentence):
                    said.append(f"{doc.name}: {sentence}")
    assert not said, said
