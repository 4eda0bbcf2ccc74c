"""The blob settings resize_image reads are checked when a worker starts, as its
SPOOL_IMAGE_* settings are.

Found trying resize_image as a new user: SPOOL_BLOB_BUCKET=b SPOOL_BLOB_PREFIX=../x
started `spool worker` as healthy, and every resize_image job then went dead with
"resize_image is misconfigured: SPOOL_BLOB_PREFIX '../x' is not a folder" (the very
case local/builtin_check.py exists for: it checked SPOOL_SMTP_*, SPOOL_HTTP_* and
SPOOL_IMAGE_*, not SPOOL_BLOB_*). SPOOL_BLOB_DIR=~/blobs wrote the images under a
folder named `~` in the working directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from local import cli


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path / 'spool.db'}")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_HANDLERS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def start(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = cli.main(["worker", "--burst", "--quiet"])
    return code, capsys.readouterr().err.splitlines()


def test_a_bad_blob_prefix_stops_the_worker_in_one_line(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_BUCKET", "media-bucket")
    monkeypatch.setenv("SPOOL_BLOB_PREFIX", "../x")
    code, [line] = start(capsys)
    assert code == 2
    assert line.startswith("spool: SPOOL_BLOB_PREFIX '../x' is not a folder: "), line
    assert line.endswith("Fix the variable and start again."), line


def test_a_blob_dir_with_a_tilde_stops_the_worker_and_makes_no_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_DIR", "~/blobs")
    code, [line] = start(capsys)
    assert code == 2
    assert line.startswith("spool: SPOOL_BLOB_DIR: '~/blobs' holds '~', which only a shell"), line
    assert not (folder / "~").exists()


def test_good_blob_settings_start_as_before(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(folder / "blobs"))
    assert start(capsys)[0] == 0
    monkeypatch.setenv("SPOOL_BLOB_BUCKET", "media-bucket")
    monkeypatch.setenv("SPOOL_BLOB_PREFIX", "media")
    assert start(capsys)[0] == 0
