"""logs.text_line keeps the `key=value` pieces of short text fields (stop 39): a line's
event, method, route and tenant recur on every request. A kept piece is the one the
line would have written anyway, and never one masked under other secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import logs
from chalicelib.log_redact import redactor

FIELDS = {"event": "http_request", "method": "GET", "route": "/status/{id}", "tenant": "acme"}


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    redactor.clear()
    yield
    redactor.clear()


def fields_of(line: str) -> str:
    """The line less its time stamp (which moves between two calls)."""
    return line.split(" ", 1)[1]


def test_a_piece_is_made_once_for_a_recurring_field(monkeypatch: pytest.MonkeyPatch) -> None:
    first = logs.text_line("spool.http", 20, "GET /status/{id} 200", FIELDS)
    quoted: list[Any] = []
    real = logs._text_value

    def counted(v: Any) -> str:
        quoted.append(v)
        return real(v)

    monkeypatch.setattr(logs, "_text_value", counted)
    again = logs.text_line("spool.http", 20, "GET /status/{id} 200", FIELDS)
    assert fields_of(again) == fields_of(first)
    assert quoted == []  # every text field's piece came from the ones kept


def test_a_secret_added_later_is_masked_in_the_next_line() -> None:
    fields = {**FIELDS, "tenant": "tenant-key-0123456789"}
    before = logs.text_line("spool.http", 20, "m", fields)
    assert "tenant=tenant-key-0123456789" in before
    redactor.add({"tenant-key-0123456789"})
    after = logs.text_line("spool.http", 20, "m", fields)
    assert "tenant-key-0123456789" not in after
    assert "tenant=***" in after
    # The whole line's own pass would mask it too: the kept piece itself must be new.
    assert logs._text_piece("tenant", "tenant-key-0123456789") == "tenant=***"


def test_pieces_are_the_pieces_written_without_them() -> None:
    redactor.add({"s3cr3t-value-42"})
    odd = {
        "event": "x",
        "spaced": "a b",
        "quoted": 'say "hi"',
        "control": "bell\x07",
        "secret": "key s3cr3t-value-42 here",
        "shape": "password=hunter2",
        "empty": "",
        "long": "y" * 200,
    }
    for _ in range(2):  # the second line reads the kept pieces
        line = logs.text_line("spool.jobs", 20, "m", odd)
        for key, value in odd.items():
            want = f"{key}={logs._text_value(redactor.text(value))}"
            assert redactor.text(want) in line or want in line
    assert "s3cr3t-value-42" not in line and "hunter2" not in line
    kept = logs._pieces[1]
    assert ("event", "x") in kept
    assert ("long", "y" * 200) not in kept  # only short texts are kept (memory)


def test_a_line_of_kept_pieces_makes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 44: text_line reads a kept piece itself; _piece (a frame a field) runs
    only for a piece not kept yet, and the line is the same bytes either way."""
    fields = {**FIELDS, "status": 200}
    first = logs.text_line("spool.http", 20, "GET /status/{id} 200", fields)
    made: list[Any] = []
    real = logs._piece

    def counted(*a: Any) -> tuple[str, bool]:
        made.append(a[1:])
        return real(*a)

    monkeypatch.setattr(logs, "_piece", counted)
    again = logs.text_line("spool.http", 20, "GET /status/{id} 200", fields)
    assert fields_of(again) == fields_of(first)
    assert made == []
    other = logs.text_line("spool.http", 20, "GET /status/{id} 200", {**fields, "tenant": "b"})
    assert made == [("tenant", "b")] and " tenant=b " in f"{other} "
