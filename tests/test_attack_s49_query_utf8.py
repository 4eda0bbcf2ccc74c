"""A query string holding bytes that are not UTF-8, on every way Spool is served.

Was (stop 49, found by sending one corpus to `spool serve` and, as API Gateway
events, to app.py): `spool serve` reads `%FF` as a lone surrogate and refuses it
400 ("not UTF-8"), but API Gateway's event and `chalice local` (both decode the
query with U+FFFD for such bytes) got whatever the parameter's check made of the
replacement character: `/jobs?state=%FF` 422, `/dlq?state=%FF` 422 "takes no query
parameter 'state'", `/jobs?%FF=1` 422 naming '\\ufffd', and `/ui/api/jobs?find=%FF`
200, a search for U+FFFD. The same request, three answers.

Now a U+FFFD in a query parameter's name or value is refused as the bytes it
stands for are, 400 in the same words on every edge; a parameter's name that is not
UTF-8 is shown with U+FFFD for its unreadable bytes, as every edge can show it. No
parameter Spool takes holds U+FFFD (states, names, numbers, cursors and ids are
ASCII; `find`'s idempotency key is the one that could, and that job is still found
by its id).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.apikit import KEY_A
from tests.test_chalice_local import serving_chalice_local
from tests.test_lambda_vs_served import Request, _both, _req

NOT_UTF8 = "is not UTF-8: percent-encode UTF-8 bytes"

# (path and query, the parameter the refusal names)
QUERIES = [
    ("/jobs?state=%FF", "state"),
    ("/jobs?limit=%FF", "limit"),
    ("/jobs?queue=a%FFb", "queue"),
    ("/jobs?cursor=%FF", "cursor"),
    ("/dlq?state=%FF", "state"),  # a parameter /dlq does not take: the query is unreadable first
    ("/dlq?type=%C3", "type"),  # a UTF-8 sequence cut short
    ("/ui/api/jobs?find=%FF", "find"),
    ("/ui/api/jobs?find=key-%EF%BF%BD", "find"),  # U+FFFD itself, as a gateway hands it on
    ("/status/j_" + "0" * 31 + "1?wait=%FF", "wait"),
    ("/jobs?%FF=1", "\\ufffd"),
    ("/jobs?st%FFate=queued", "st\\ufffdate"),
]


def _expected(name: str) -> dict[str, object]:
    return {
        "error": {
            "code": "bad_request",
            "message": f"query parameter {name!r} {NOT_UTF8}",
            "details": {"parameter": name},
        }
    }


def test_spool_serve_and_lambda_refuse_a_query_that_is_not_utf8_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus: list[Request] = [_req("GET", path) for path, _ in QUERIES]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    for (path, name), want, got in zip(QUERIES, served, on_lambda, strict=True):
        assert want == (400, _expected(name)), path
        assert got == want, path


def test_a_query_in_utf8_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text past ASCII that is UTF-8 is no refusal: a queue name it cannot be is 422
    (the parameter's own check), a search for it finds nothing (200)."""
    corpus = [_req("GET", "/jobs?queue=caf%C3%A9"), _req("GET", "/ui/api/jobs?find=caf%C3%A9")]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    assert on_lambda == served
    assert [status for status, _ in served] == [422, 200]


@pytest.fixture(scope="module")
def chalice_local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path: Path = tmp_path_factory.mktemp("s49-query-utf8")
    env = {**os.environ, "SPOOL_API_KEYS": f"{KEY_A}=tenant-a"}
    with serving_chalice_local(tmp_path, env) as port:
        yield port


@pytest.mark.parametrize(("path", "name"), QUERIES, ids=[path for path, _ in QUERIES])
def test_chalice_local_refuses_a_query_that_is_not_utf8_as_spool_serve_does(
    chalice_local_port: int, path: str, name: str
) -> None:
    answer = requests.get(
        f"http://127.0.0.1:{chalice_local_port}{path}", headers={"X-API-Key": KEY_A}, timeout=10
    )
    assert (answer.status_code, json.loads(answer.text)) == (400, _expected(name))
