"""`chalice local` and a Content-Type Python's header parser reads as a MIME container.

Was (stop 49, found by sending one corpus to `spool serve` and `chalice local`):
Python's parser (http.client.parse_headers) parses the head as an email message,
body included, so a `multipart/*` Content-Type left defects about the (empty) body's
missing boundaries, and a `message/*` one a sub-message as its payload. Spool's
check of a head that parser could not read whole (chalice_local_http.head_refusal)
took either for a line that is no header: `POST /enqueue` with `Content-Type:
multipart/form-data` was 400 "a header line is not `Name: value`", where `spool
serve` and Lambda read the body as JSON whatever its type (201).

Now only what the head's own lines caused is refused: a line that is no header, a
nameless or folded one, in front of any Content-Type.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from http.client import parse_headers
from pathlib import Path

import pytest
import requests

from chalicelib.api.http import FOLDED_HEADER, INVALID_HEADER
from chalicelib.chalice_local_http import head_refusal
from tests.test_chalice_local import serving_chalice_local

KEY = "s49-local-key-0123456789"
CONTAINERS = [
    "multipart/form-data",
    "multipart/form-data; boundary=x",
    'multipart/mixed; boundary="--b"',
    "message/rfc822",
    "message/partial",
]


def _head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.mark.parametrize("kind", CONTAINERS)
def test_a_container_content_type_is_no_malformed_head(kind: str) -> None:
    for head in (
        _head("Host: x", f"Content-Type: {kind}", f"X-API-Key: {KEY}"),
        _head(f"Content-Type: {kind}", "Host: x"),
    ):
        assert head_refusal(parse_headers(io.BytesIO(head))) is None, head


@pytest.mark.parametrize("kind", [*CONTAINERS, "application/json"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("NoColonHere", INVALID_HEADER),
        ("X-Note : y", INVALID_HEADER),
        (":no-name", INVALID_HEADER),
    ],
)
def test_a_line_that_is_no_header_is_refused_whatever_the_content_type(
    kind: str, bad: str, message: str
) -> None:
    head = _head("Host: x", f"Content-Type: {kind}", bad, f"X-API-Key: {KEY}")
    refusal = head_refusal(parse_headers(io.BytesIO(head)))
    assert refusal is not None and refusal[2] == message, head


@pytest.mark.parametrize("kind", [*CONTAINERS, "application/json"])
def test_a_folded_first_line_is_refused_whatever_the_content_type(kind: str) -> None:
    head = _head(" Host: x", f"Content-Type: {kind}")
    refusal = head_refusal(parse_headers(io.BytesIO(head)))
    assert refusal is not None and refusal[2] == FOLDED_HEADER, head


@pytest.fixture(scope="module")
def local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path: Path = tmp_path_factory.mktemp("s49-chalice-local-types")
    with serving_chalice_local(tmp_path, {**os.environ, "SPOOL_API_KEYS": f"{KEY}=s49"}) as port:
        yield port


@pytest.mark.parametrize("kind", CONTAINERS)
def test_chalice_local_enqueues_a_json_body_sent_with_a_container_type(
    local_port: int, kind: str
) -> None:
    """As `spool serve` and Lambda do: a body is read as JSON whatever its type."""
    answer = requests.post(
        f"http://127.0.0.1:{local_port}/enqueue",
        data=json.dumps({"type": "echo", "payload": {"kind": kind}}),
        headers={"X-API-Key": KEY, "Content-Type": kind},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    job = requests.get(
        f"http://127.0.0.1:{local_port}{answer.json()['status_url']}",
        headers={"X-API-Key": KEY},
        timeout=10,
    )
    assert job.json()["payload"] == {"kind": kind}
