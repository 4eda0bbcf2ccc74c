"""`spool jobs` / `spool dlq list` with an empty --cursor are refused, as the server
refuses an empty `cursor` (422): on the local store `--cursor "$NEXT"` with NEXT unset
listed the first page again, so a script paging until no cursor came back read page
one for ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from local import cli


@pytest.mark.parametrize("argv", [["jobs"], ["dlq", "list"]], ids=["jobs", "dlq-list"])
def test_an_empty_cursor_is_refused_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/spool.db")
    assert cli.main(["enqueue", "echo"]) == 0
    capsys.readouterr()
    code = cli.main([*argv, "--cursor", ""])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("spool: argument --cursor: ") and "empty" in err, err
