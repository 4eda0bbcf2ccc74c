"""A path setting written with shell syntax nothing expands (`~`, `$HOME`) is refused,
with the path meant.

Found trying docs/self-hosting.md's store URLs: SPOOL_STORE_URL=sqlite:///~/spool.db
(as a shell would read ~/spool.db) made a folder named `~` in the working directory,
held the store there and said nothing: the jobs were not where the user looked, and
`rm -rf ~` to clean it up removes their home. A `.env` or systemd file's $HOME is not
expanded either. The CA-file settings said only "'~/ca.pem' is not a file".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chalicelib.builtin.setting_values import ca_file
from chalicelib.storage import sqlite_path
from tests.test_newuser_s48_webhook_ca_file import worker_refusal


@pytest.mark.parametrize(
    "url",
    ["sqlite:///~/spool.db", "sqlite:///~", "sqlite:///$HOME/spool.db", "sqlite:///${HOME}/x.db"],
)
def test_a_sqlite_path_with_shell_syntax_is_refused_with_the_path_meant(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        sqlite_path(url)
    message = str(refused.value)
    assert "only a shell expands" in message, message
    meant = os.path.expandvars(os.path.expanduser(url.removeprefix("sqlite:///")))
    assert f"sqlite:///{meant}" in message, message


@pytest.mark.parametrize("url", ["sqlite:///a~b/x.db", "sqlite:///x$.db", "sqlite:///.spool/s.db"])
def test_a_tilde_or_dollar_that_is_no_shell_syntax_is_taken(url: str) -> None:
    assert sqlite_path(url)[0] == url.removeprefix("sqlite:///")


def test_spool_worker_refuses_it_and_makes_no_tilde_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_STORE_URL", "sqlite:///~/spool.db")
    line = worker_refusal(monkeypatch, capsys)
    assert line.startswith("spool: SPOOL_STORE_URL 'sqlite:///~/spool.db': "), line
    assert not (tmp_path / "~").exists()


def test_a_ca_file_with_a_tilde_says_it_was_not_expanded() -> None:
    with pytest.raises(ValueError) as refused:
        ca_file("~/ca.pem")
    message = str(refused.value)
    assert "only a shell expands" in message
    assert os.path.expanduser("~/ca.pem") in message
