"""An API process says in its own log why it answers 503, not only that it did.

Found by a chaos run (helper E, s48): `spool serve --no-worker` on SQLite while
another process held `BEGIN EXCLUSIVE` on the file for 10+ s, and on DynamoDB
after moto_server was restarted (its table gone). Clients got clear 503s
("the SQLite database stayed locked", "the DynamoDB table 'jobs' does not
exist: ..."), but the API process's log held nothing but "POST /enqueue 503"
lines: the store's errors that Spool already maps are answered without a log
line, so an operator reading an API-only process's log could not tell a
locked file from a lost table. Each 5xx request line now names the answer's
error code and message (what the client read, so nothing secret).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from chalicelib.errors import StoreNotMigrated, StoreUnavailable
from chalicelib.runtime import Runtime
from tests.apikit import KEY_A, Api, installed, settings_for


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spool.http"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StoreUnavailable("the SQLite database stayed locked", retry_after=1), "store_unavailable"),
        (StoreNotMigrated("the DynamoDB table 'jobs' does not exist"), "store_not_migrated"),
    ],
)
def test_a_503_request_line_names_the_error_the_client_was_given(
    api: Api,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    code: str,
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(rt.store, "add", down)
    with caplog.at_level(logging.INFO, logger="spool"):
        reply = api.call("POST", "/enqueue", {"type": "echo"}, key=KEY_A)
    assert reply.status == 503 and reply.error_code == code
    [line] = _request_lines(caplog)
    assert line.levelno == logging.WARNING
    assert getattr(line, "error_code", None) == code
    assert getattr(line, "reason", None) == str(error.args[0])[:100]


def test_a_successful_request_line_carries_no_error_fields(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spool"):
        reply = api.call("POST", "/enqueue", {"type": "echo"}, key=KEY_A)
    assert reply.status == 201
    [line] = _request_lines(caplog)
    assert not hasattr(line, "error_code") and not hasattr(line, "reason")
