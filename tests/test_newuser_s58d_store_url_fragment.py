"""A store URL holding `#` is refused, saying why, instead of being cut there.

Found in a new user's pass (s58, helper D): `#` begins a URL's fragment, which every
URL parser drops. `SPOOL_STORE_URL=sqlite:////data/a#b/spool.db` made and used the
file `/data/a` without a word, so the jobs went where no other process looked; a
password holding `#` lost its rest, the host and the options with it: redis-py read
part of the password as the port ("Port could not be cast to integer value as 'pa'"),
libpq part of the user name as the host ("failed to resolve host 'postgres'"), and a
DynamoDB URL its `?queue=` option. Now every store URL with `#` is refused at once
(exit 2), without echoing what follows the `#` (a password's rest), saying to write
`#` as %23 in a user name or password, and for SQLite to name the file by a path
without one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.config import ConfigError
from chalicelib.storage import open_store, sqlite_path, store_scheme
from tests.procs import run_spool as spool

SECRET = "Zq9Xv"  # the rest of a password, after its '#'


@pytest.mark.parametrize("command", [["enqueue", "echo"], ["jobs"], ["worker", "--burst"]])
def test_a_sqlite_path_with_a_hash_opens_no_other_file(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "a#b").mkdir()
    result = spool(tmp_path, *command, SPOOL_STORE_URL=f"sqlite:///{tmp_path}/a#b/spool.db")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spool: SPOOL_STORE_URL"), result.stderr
    assert "'#'" in lines[0] and "fragment" in lines[0] and "without '#'" in lines[0]
    # Nothing made where the URL was cut (tmp_path/a), nor in the folder it named.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a#b"]
    assert list((tmp_path / "a#b").iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:pa#{SECRET}@127.0.0.1:6399/0",
        f"rediss://user:pa#{SECRET}@127.0.0.1:6399/0",
        f"postgresql://spool:pa#{SECRET}@127.0.0.1:5432/spool?schema=spool",
        f"postgres://spool#{SECRET}:pw@127.0.0.1/spool",
        f"dynamodb://jobs#{SECRET}?queue=jobs",
        f"memory://#{SECRET}",
    ],
)
def test_any_store_url_with_a_hash_is_refused_without_showing_what_follows(url: str) -> None:
    for refuse in (store_scheme, open_store):
        with pytest.raises(ConfigError) as caught:
            refuse(url)
        message = str(caught.value)
        assert message.startswith("SPOOL_STORE_URL (a ") and "'#'" in message
        assert SECRET not in message and "pa" not in message.split("URL)")[0]
        if not url.startswith("memory"):
            assert "%23" in message


def test_sqlite_path_refuses_a_hash_before_reading_a_path() -> None:
    with pytest.raises(ValueError, match="fragment"):
        sqlite_path("sqlite:///data/a#b/spool.db")


def test_a_password_with_its_hash_written_as_percent_23_is_taken() -> None:
    assert store_scheme("redis://:pa%23ss@127.0.0.1:6399/0") == "redis"
    assert store_scheme("postgresql://spool:pa%23ss@127.0.0.1/spool") == "postgresql"
