"""The `spool` command line facing a hostile server: what it answers never drives the terminal.

Found from outside (stop 46, second attack round): a loopback server answering
`{"error": {"message": "\\x1b]0;PWNED\\x07\\x1b[2J..."}}` to `spool status`,
`spool cancel` or `spool enqueue` had its escape sequences written raw to stderr
in the command's one error line: they retitled the terminal, cleared it and
recoloured what followed (and U+202E reversed the rest of the line). The tables
already escaped such characters (local/tables.py printable); the error line did
not. Every line is now escaped the same way, wherever its words came from.
"""

from __future__ import annotations

import json

import pytest

from local import cli
from local.cli_errors import line
from tests.canned_http import CannedServer

JOB_ID = "j_" + "0" * 32
HOSTILE = "gone \x1b]0;PWNED\x07\x1b[2J\x1b[31mred\x9b1m \u202egnp.exe\x00"
# What a terminal would act on: ESC, BEL, the C1 CSI, the right-to-left override, NUL.
ACTIVE = ("\x1b", "\x07", "\x9b", "\u202e", "\x00")


def canned(status: int, body: object) -> CannedServer:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return CannedServer(head.encode() + data)


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "not_found"), (400, "bad_request"), (409, "conflict"), (500, "internal"), (503, "x")],
)
@pytest.mark.parametrize(
    "command",
    [["status", JOB_ID], ["cancel", JOB_ID], ["enqueue", "echo", "--payload", "{}"]],
)
def test_a_server_error_message_reaches_stderr_escaped(
    status: int, code: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    server = canned(status, {"error": {"code": code, "message": HOSTILE}})
    try:
        exit_code = cli.main([*command, "--url", server.url, "--key", "k" * 32])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert exit_code != 0
    assert err.startswith("spool: gone ")
    for char in ACTIVE:
        assert char not in err, f"{char!r} reached the terminal: {err!r}"
    # Still readable: each one is shown as its escape, not dropped.
    assert "\\x1b]0;PWNED\\x07" in err and "\\u202e" in err


def test_validation_details_from_the_server_are_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = {
        "error": {
            "code": "validation_failed",
            "message": HOSTILE,
            "details": {"errors": [{"loc": ["payload", HOSTILE], "msg": HOSTILE}]},
        }
    }
    server = canned(422, body)
    try:
        exit_code = cli.main(
            ["enqueue", "echo", "--payload", "{}", "--url", server.url, "--key", "k" * 32]
        )
    finally:
        server.close()
    err = capsys.readouterr().err
    assert exit_code == 2
    for char in ACTIVE:
        assert char not in err, f"{char!r} reached the terminal: {err!r}"


def test_the_error_line_keeps_printable_text_as_it_is() -> None:
    # Letters of any script are text, not control: only what a terminal acts on is escaped.
    assert line("job «ünïcødé» 名前 not found", "Check the id") == (
        "spool: job «ünïcødé» 名前 not found. Check the id."
    )
    assert line("bad \x1b[31m", "fix \u202e") == "spool: bad \\x1b[31m. fix \\u202e."
