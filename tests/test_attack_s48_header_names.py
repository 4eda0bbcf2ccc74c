"""A header NAME that is no HTTP token, on Lambda.

Was: stop 47 made app.py refuse an event whose header VALUE holds a control
character, in `spool serve`'s words; the names were not looked at. A name holding
a space, a colon, a control character, a separator such as `(` `@` `/` or a letter
past ASCII was served on Lambda (200, 201: the job stored), while `spool serve`'s
server refuses the line (400, "a header line is not `Name: value`: the name is
letters, digits and !#$%&'*+-.^_`|~ ..."). An event can hold any string as a name
(a direct invocation, a hand-made integration), in `headers` or only in
multiValueHeaders. `chalice local` served a separator in a name too (Python's
parser takes any printable ASCII but the colon). Now every edge answers 400 in the
same words, before a key is read (no failed sign-in counted) and before any job is
stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

import app as spool_app
from chalicelib.api import http as api_http
from local.emulator import context
from tests.apikit import KEY_A
from tests.test_chalice_local import _one_exchange_kept_alive, serving_chalice_local
from tests.test_lambda_vs_served import (
    INVALID_HEADER,
    JOB,
    JSON,
    Request,
    _both,
    _fresh,
    _req,
    gateway_event,
)

# Names a header line `spool serve` reads can carry (so both edges can be asked),
# none of them a token (RFC 9110 5.6.2).
BAD_NAMES = [
    "X Note",
    "X\tNote",
    "X\x01Note",
    "X\x7fNote",
    "X(Note)",
    "X@Note",
    "X/Note",
    "X{Note}",
    'X"Note',
    "X=Note",
    "X;Note",
    "X,Note",
    "X[Note]",
    "X?Note",
    "X\\Note",
    "X<Note>",
    "X\xe9",  # one latin-1 byte (obs-text is for values, not names)
]
# Their neighbours: every character a token may hold.
GOOD_NAMES = ["X!#$%&'*+-.^_`|~", "x-note-09AZaz", "Idempotency-Key"]


def _with_name(method: str, path: str, body: bytes | None, name: str) -> Request:
    return _req(method, path, body, headers=(JSON, (name, "v")))


def test_a_header_name_that_is_no_token_is_400_on_both_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = [_with_name("POST", "/enqueue", JOB, name) for name in BAD_NAMES]
    corpus += [_with_name("GET", "/jobs", None, name) for name in BAD_NAMES[:3]]
    corpus += [_with_name("POST", "/enqueue", JOB, name) for name in GOOD_NAMES]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    for request, want, got in zip(corpus, served, on_lambda, strict=True):
        assert got == want, request
    bad = len(corpus) - len(GOOD_NAMES)
    assert served[:bad] == [(400, INVALID_HEADER)] * bad
    assert [status for status, _ in served[bad:]] == [201] * len(GOOD_NAMES)


# Names only an event can carry: a colon, a line break, nothing at all, characters
# past U+00FF, a leading blank (on a line `spool serve` reads that is folding, which
# it refuses in words of its own). The second case holds a name only in
# multiValueHeaders (API Gateway keeps a repeated header's earlier lines there alone).
EVENT_ONLY = [
    "X:Note",
    "X-API-Key:",
    "X\r\nX-API-Key",
    "X\nNote",
    "",
    "X\u2603",
    "X\u200b",
    " X-Note",
]


@pytest.mark.parametrize("name", EVENT_ONLY)
@pytest.mark.parametrize("where", ["headers", "multiValueHeaders"])
def test_a_name_only_an_event_can_carry_is_400_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, where: str
) -> None:
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    with _fresh(tmp_path, "lambda", monkeypatch):
        event = gateway_event(_req("POST", "/enqueue", JOB))
        if where == "headers":
            event["headers"][name] = "v"
            event["multiValueHeaders"][name] = ["v"]
        else:
            event["multiValueHeaders"][name] = ["v"]
        answer = spool_app.app(event, context("api_handler"))
        assert (answer["statusCode"], json.loads(answer["body"])) == (400, INVALID_HEADER)
        listed = spool_app.app(gateway_event(_req("GET", "/jobs")), context("api_handler"))
        assert json.loads(listed["body"])["jobs"] == []


def test_a_bad_name_beside_a_wrong_key_counts_no_failed_sign_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the key is read: twenty of them, then a wrong key is 401, not
    429 (SPOOL_AUTH_FAILURES is 20 a minute), on both edges."""
    refused = _req("GET", "/jobs", key="wrong-key-0123456789", headers=((("X Note", "v")),))
    corpus = [refused] * 20 + [_req("GET", "/jobs", key="wrong-key-0123456789")]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    assert on_lambda == served
    assert [status for status, _ in served] == [400] * 20 + [401]


def test_a_key_sent_under_a_name_near_x_api_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`X-API-Key ` (a blank before the colon) and `X-API-Key:` are no key header on
    `spool serve` (400); on Lambda neither was read as the key either, but the
    request went on to a 401. Both 400 now, in the same words."""
    corpus = [_req("GET", "/jobs", key=None, headers=((("X-API-Key ", KEY_A)),))]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    assert on_lambda == served == [(400, INVALID_HEADER)]


SEPARATOR_NAMES = [b"X(Note)", b"X@Note", b"X/Note", b"X{a}", b"X=Note", b"X;N", b"X,N", b'X"N']


def test_chalice_local_refuses_a_separator_in_a_name(tmp_path: Path) -> None:
    """Python's header parser takes any printable ASCII but the colon in a name, so
    `chalice local` served `X(Note): v` (201, the job stored); its events reach
    app.py's check, which now refuses them as `spool serve` does."""
    key = "s48-local-key-0123456789"
    env = {**os.environ, "SPOOL_API_KEYS": f"{key}=s48"}
    body = b'{"type": "echo"}'
    with serving_chalice_local(tmp_path, env) as port:
        for name in SEPARATOR_NAMES:
            data = _one_exchange_kept_alive(
                port,
                b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\n"
                b"Content-Type: application/json\r\n%s: v\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (key.encode(), name, len(body), body),
            )
            head, _, answer = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), (name, data)
            assert json.loads(answer) == INVALID_HEADER, name
        listed = requests.get(
            f"http://127.0.0.1:{port}/jobs", headers={"X-API-Key": key}, timeout=10
        )
        assert listed.json()["jobs"] == []
