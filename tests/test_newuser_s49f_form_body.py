"""A job sent as form data (`curl -d type=echo`, whose Content-Type is
application/x-www-form-urlencoded, or `curl -F type=echo`, multipart/form-data) was
refused 400 "request body is not valid JSON" with Python's parser reason ("Expecting
value: line 1 column 1 (char 0)"): nothing said that the body was form data, nor what
to send instead. Found by trying the newcomer's mistakes against `spool serve` (s49,
helper F). The refusal now names the form Content-Type and says to send a JSON object;
nothing is stored. Real HTTP over a socket to `spool serve`'s server."""

from __future__ import annotations

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange, post

BOUNDARY = "------------------------s49f"
MULTIPART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="type"\r\n\r\necho\r\n--{BOUNDARY}--\r\n'
).encode()


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        ("application/x-www-form-urlencoded", b"type=echo", "application/x-www-form-urlencoded"),
        (f"multipart/form-data; boundary={BOUNDARY}", MULTIPART, "multipart/form-data"),
    ],
)
def test_a_form_body_is_400_saying_to_send_json(
    server: Server, content_type: str, body: bytes, named: str
) -> None:
    status, answer = post(server, "/enqueue", body, content_type)
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == "bad_request"
    message = error["message"]
    assert message.startswith("request body is not valid JSON")
    assert "form data" in message and named in message
    assert "send a JSON object" in message and '{"type": "echo"}' in message
    assert BOUNDARY not in message  # the media type only, not its parameters
    status, page = exchange(
        server,
        f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status == 200 and page["jobs"] == []  # nothing stored


def test_json_sent_with_curls_default_form_type_is_still_taken(server: Server) -> None:
    """curl -d '{...}' labels JSON as form data: the body is what counts."""
    status, answer = post(
        server, "/enqueue", b'{"type": "echo"}', "application/x-www-form-urlencoded"
    )
    assert status == 201, answer


def test_text_that_is_not_json_under_a_json_type_keeps_its_plain_refusal(server: Server) -> None:
    status, answer = post(server, "/enqueue", b"type=echo", "application/json")
    assert status == 400 and answer["error"]["message"] == "request body is not valid JSON"
