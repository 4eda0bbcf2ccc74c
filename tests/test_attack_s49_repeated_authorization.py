"""An Authorization header sent twice, on every way Spool is served.

Was (stop 49, found by sending one corpus to `spool serve` and, as API Gateway
events, to app.py): every route reads `Authorization: Bearer <key>` when no X-API-Key
came (the /metrics scraper's way, and the sign-in count's). Sent twice,

- with the same operator key, /metrics was 200 on Lambda (multiValueHeaders: one
  value twice is once) and 401 "invalid API key" under `spool serve`, whose server
  joins the two lines into one, `Bearer k, Bearer k`, read as one wrong token;
- with two different keys, it was 400 "given more than once" on Lambda, on /metrics
  and on /jobs, and 401 under `spool serve`.

Now `Authorization` is read as the X-API-Key and the Content-Type are
(gateway_event.LISTED): a line of comma-separated credentials, each a scheme and a
token, is that many values, on every edge; the same one twice is once, different
ones 400. A line whose commas belong to one credential (AWS's
`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`) is one value.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.api.gateway_event import listed_values
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY
from tests.test_chalice_local import serving_chalice_local
from tests.test_lambda_vs_served import Request, _req, answered_alike

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123abcd"
)


def _auth(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple(("Authorization", value) for value in values)


def _refused_twice() -> dict[str, object]:
    return {
        "error": {
            "code": "bad_request",
            "message": "the authorization header is given more than once, with different "
            "values: send it once",
            "details": {"header": "authorization"},
        }
    }


# (request, the status both edges answer)
CASES: list[tuple[Request, int]] = [
    (_req("GET", "/metrics", key=None, headers=_auth(f"Bearer {OPERATOR_KEY}")), 200),
    (_req("GET", "/metrics", key=None, headers=_auth(*[f"Bearer {OPERATOR_KEY}"] * 2)), 200),
    (_req("GET", "/metrics", key=None, headers=_auth(f"Bearer {OPERATOR_KEY}", "Bearer x")), 400),
    (_req("GET", "/jobs", key=None, headers=_auth(f"Bearer {KEY_A}", f"Bearer {KEY_B}")), 400),
    (_req("GET", "/metrics", key=None, headers=_auth(SIGV4)), 401),
    (_req("GET", "/jobs", key=None, headers=_auth(SIGV4)), 401),
    (_req("GET", "/metrics", key=None, headers=_auth(f"Bearer {OPERATOR_KEY}, Bearer x")), 400),
    # With an X-API-Key, Authorization is never read: the key decides.
    (_req("GET", "/jobs", headers=_auth("Bearer x", "Bearer y")), 200),
]


def test_spool_serve_and_lambda_read_a_repeated_authorization_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = answered_alike(tmp_path, monkeypatch, CASES)
    for (request, status), want in zip(CASES, served, strict=True):
        if status == 400:
            assert want[1] == _refused_twice(), request


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("Bearer a", ["Bearer a"]),
        ("Bearer a, Bearer b", ["Bearer a", "Bearer b"]),
        ("Bearer a,Basic Yjpj", ["Bearer a", "Basic Yjpj"]),
        (SIGV4, [SIGV4]),
        ('Digest username="a, b", realm="r"', ['Digest username="a, b", realm="r"']),
        ("Bearer a, b", ["Bearer a, b"]),
    ],
)
def test_an_authorization_line_names_several_credentials_only_when_each_is_one(
    line: str, values: list[str]
) -> None:
    assert listed_values("authorization", line) == values


@pytest.fixture(scope="module")
def chalice_local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path: Path = tmp_path_factory.mktemp("s49-repeated-authorization")
    env = {
        **os.environ,
        "SPOOL_API_KEYS": f"{KEY_A}=tenant-a,{KEY_B}=tenant-b",
        "SPOOL_METRICS_KEYS": OPERATOR_KEY,
    }
    with serving_chalice_local(tmp_path, env) as port:
        yield port


@pytest.mark.parametrize(("request_", "status"), CASES)
def test_chalice_local_reads_a_repeated_authorization_as_the_others_do(
    chalice_local_port: int, request_: Request, status: int
) -> None:
    method, path, headers, _ = request_
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    with socket.create_connection(("127.0.0.1", chalice_local_port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert int(head.split(b" ", 2)[1]) == status, body[:300]
    if status == 400:
        assert json.loads(body) == _refused_twice()
