"""A body that starts with a UTF-8 byte order mark (a file saved "UTF-8 with BOM" by
Notepad or PowerShell, sent with `curl -d @file.json`) is refused 400 as JSON must be
(RFC 8259 8.1), with a reason that tells the client to send it without the BOM, not
Python's advice to its own code ("decode using utf-8-sig"); nothing is stored. Real
HTTP over a socket to `spool serve`'s server."""

from __future__ import annotations

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange, post

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/enqueue", b'{"type": "echo", "payload": {"a": 1}}'),
        ("/enqueue", b'{"jobs": [{"type": "echo"}]}'),
        ("/dlq/redrive", b"{}"),
        ("/ui/api/dead/purge", b'{"all": true}'),
    ],
)
def test_a_body_with_a_bom_is_400_saying_to_send_it_without(
    server: Server, path: str, body: bytes
) -> None:
    status, answer = post(server, path, BOM + body)
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == "bad_request"
    reason = error["details"]["reason"]
    assert "byte order mark" in reason and "send it without one" in reason
    assert "utf-8-sig" not in str(answer)
    status, page = exchange(
        server,
        f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status == 200 and page["jobs"] == []  # nothing stored


def test_the_same_body_without_the_bom_is_taken(server: Server) -> None:
    status, answer = post(server, "/enqueue", b'{"type": "echo", "payload": {"a": 1}}')
    assert status == 201, answer


def test_a_bom_sent_with_curls_default_form_type_is_not_called_form_data(
    server: Server,
) -> None:
    """`curl -d @file.json` of a file saved with a BOM labels it form data (curl's
    default type): the message said "it was sent as form data ...; send a JSON object",
    though the body was a JSON object and form-typed JSON is taken. The BOM was the
    trouble, and the message now says so, with the fix."""
    body = BOM + b'{"type": "echo", "payload": {"a": 1}}'
    status, answer = post(server, "/enqueue", body, "application/x-www-form-urlencoded")
    assert status == 400, answer
    message = answer["error"]["message"]
    assert "form data" not in message
    assert "byte order mark" in message and "plain UTF-8" in message
