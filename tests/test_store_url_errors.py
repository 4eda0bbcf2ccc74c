"""A store URL that cannot be opened is the operator's to fix: a ConfigError naming
SPOOL_STORE_URL and the reason (which the CLI prints as one line and the API turns into
a 503 naming no setting), never an "unexpected error"."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from chalicelib.config import ConfigError
from chalicelib.errors import StoreUnavailable
from chalicelib.storage import open_store


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text\n" * 200)
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(f"sqlite:///{path}")
    assert "cannot be opened as a SQLite database" in str(caught.value)
    assert path.read_text().startswith("not a database")  # left as it was


@pytest.mark.parametrize("slash", ["", "/"], ids=["folder", "folder-slash"])
def test_a_directory_where_the_file_should_be(tmp_path: Path, slash: str) -> None:
    """A folder named for the file said "cannot be opened as a SQLite database: unable
    to open database file" (or, with a trailing slash, "cannot create ...: Is a
    directory; give a path in a folder this user can write", a folder it could write).
    Now it says the path is a folder and names a file in it."""
    with pytest.raises(ConfigError) as caught:
        open_store(f"sqlite:///{tmp_path}{slash}")
    said = str(caught.value)
    assert f"{tmp_path} is a folder: name the database file in it ({tmp_path}/spool.db)" in said
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_is_named_as_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite says only "unable to open database file"; the folder says why. (A real
    read-only mount needs root and a mount: the file system's answer stands in.)"""

    class ReadOnly:
        f_flag = os.ST_RDONLY

    def unable(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("unable to open database file")  # as SQLite says it

    monkeypatch.setattr("chalicelib.storage.sqlite.os.statvfs", lambda folder: ReadOnly())
    monkeypatch.setattr("chalicelib.storage.sqlite.SQLiteStore", unable)
    with pytest.raises(ConfigError, match="cannot be opened as a SQLite database") as caught:
        open_store(f"sqlite:///{tmp_path}/spool.db")
    assert "is mounted read-only" in str(caught.value)


def test_a_file_that_cannot_be_created_names_the_setting_and_the_path(tmp_path: Path) -> None:
    """A parent that is a file, a folder under /proc: os.open's OSError escaped as an
    "unexpected error" from enqueue, worker and serve."""
    blocker = tmp_path / "w.db"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(f"sqlite:///{blocker}/inner.db")
    assert f"cannot create {blocker}/inner.db" in str(caught.value)
    assert "Not a directory" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot create /proc/"):
        open_store("sqlite:////proc/spool-no-such/spool.db")


def test_dynamodb_without_a_region_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="no AWS region") as caught:
        open_store("dynamodb://jobs?queue=q&bucket=b")
    assert "?region=" in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite://data/jobs.db?synchronous=full"])
def test_a_sqlite_url_with_two_slashes_is_refused_not_read_as_the_default(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the name parsed as a host, the path came out empty, and the store quietly
    opened .spool/spool.db instead."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(url)
    assert "sqlite:///" in str(caught.value) and "three slashes" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # nothing was created anywhere


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:", "sqlite:///?durability=full"])
def test_a_sqlite_url_without_a_file_is_refused_not_read_as_the_default(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(url)
    assert "names its file" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "psycopg", "postgres"),
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
    ],
)
def test_a_store_whose_driver_is_missing_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, driver: str, extra: str
) -> None:
    """`make run` installs what SQLite needs; pointed at Postgres, every command said
    "unexpected error: ModuleNotFoundError: No module named 'psycopg'"."""
    for name in [m for m in sys.modules if m == driver or m.startswith(driver + ".")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("chalicelib.storage.postgres", "chalicelib.storage.redis_store"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, driver, None)  # import raises ModuleNotFoundError
    with pytest.raises(ConfigError, match=rf"Install Spool's '{extra}' extra .*\.\[{extra}\]"):
        open_store(url)


def test_a_bad_setting_the_store_reads_is_blamed_on_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Was: "SPOOL_STORE_URL 'sqlite:///...': SPOOL_ATTEMPT_HISTORY must be ..."."""
    monkeypatch.setenv("SPOOL_ATTEMPT_HISTORY", "0")
    with pytest.raises(ConfigError) as refused:
        open_store(f"sqlite:///{tmp_path}/spool.db")
    assert str(refused.value).startswith("SPOOL_ATTEMPT_HISTORY must be")


@pytest.mark.parametrize("value", ["0", "101", "2.5", "many"])
def test_a_bad_webhook_history_refuses_the_store_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """SPOOL_WEBHOOK_HISTORY (finished webhook deliveries kept per job) is checked as the
    store opens, so `spool serve`, `spool worker` and a Lambda refuse to start on it."""
    monkeypatch.setenv("SPOOL_WEBHOOK_HISTORY", value)
    with pytest.raises(ConfigError) as refused:
        open_store(f"sqlite:///{tmp_path}/spool.db")
    assert str(refused.value).startswith("SPOOL_WEBHOOK_HISTORY must be"), str(refused.value)
    assert not (tmp_path / "spool.db").exists()


def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A shell with a region and no AWS credentials anywhere (a new user's laptop)."""
    from chalicelib.storage import dynamodb_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(dynamodb_aws, "_session", None)  # no credentials found before


def test_no_aws_credentials_is_said_as_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/aws.md's offline try on a laptop without AWS credentials: `spool serve`
    said "unexpected error: NoCredentialsError: Unable to locate credentials"."""
    no_aws_credentials(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as refused:
        # Port 9 is never asked: the request is refused for want of credentials first.
        open_store("dynamodb://jobs?queue=jobs&endpoint=http://127.0.0.1:9&create=1")
    message = str(refused.value)
    assert "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert message.startswith("SPOOL_STORE_URL 'dynamodb://jobs?"), message


def test_no_aws_credentials_met_by_a_later_request_says_so_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without create=1 the first request comes later (`spool serve`'s probe): it said
    "AWS is unreachable: NoCredentialsError. Check ... that the store is running"."""
    from local.cli_errors import explain

    no_aws_credentials(monkeypatch, tmp_path)
    store = open_store("dynamodb://jobs?queue=jobs&endpoint=http://127.0.0.1:9")
    try:
        with pytest.raises(StoreUnavailable) as refused:
            store.probe()  # type: ignore[attr-defined]
    finally:
        store.close()
    assert "no AWS credentials: set AWS_ACCESS_KEY_ID" in refused.value.message
    assert refused.value.public == "the job store cannot be reached; try again shortly"
    assert explain(refused.value).fix == ""  # not "Check ... that the store is running"
