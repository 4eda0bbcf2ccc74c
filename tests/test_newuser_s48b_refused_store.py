"""A SQLite store URL that is refused leaves nothing beside the path it named.

Found as a new user: `SPOOL_STORE_URL=sqlite:////path/notes.txt` (a text file) or a
directory was refused with one clear line, but left `notes.txt.wake` (a folder) and
at times `.writer` / `.waiting` lock files beside it, which the user then had to
find and delete. What the refused open made is removed again; what was there before
stays.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chalicelib.storage import sqlite


def _refused(path: Path) -> str:
    with pytest.raises(ValueError) as refused:
        sqlite.from_url(f"sqlite:///{path}")
    return str(refused.value)


def test_a_file_that_is_not_sqlite_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 20, encoding="utf-8")
    assert "cannot be opened as a SQLite database" in _refused(notes)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
    assert notes.read_text(encoding="utf-8").startswith("shopping list")


def test_a_directory_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("x", encoding="utf-8")
    _refused(folder)
    assert sorted(os.listdir(tmp_path)) == ["data"]
    assert os.listdir(folder) == ["keep.txt"]


def test_companions_there_before_the_refusal_stay(tmp_path: Path) -> None:
    """Only what the refused open made goes: a lock file already there is not its."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database", encoding="utf-8")
    (tmp_path / "notes.txt.writer").write_text("", encoding="utf-8")
    _refused(notes)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "notes.txt.writer"]


def test_a_real_store_keeps_its_companions(tmp_path: Path) -> None:
    store = sqlite.from_url(f"sqlite:///{tmp_path / 'spool.db'}")
    try:
        assert (tmp_path / "spool.db.wake").is_dir()
    finally:
        store.close()
