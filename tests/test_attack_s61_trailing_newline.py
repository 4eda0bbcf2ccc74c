"""A name checked by a pattern is checked whole: its last character too.

Python's `re.match` with a pattern ending in `$` accepts a trailing newline ("$"
matches just before one). Every check that held a name to `^...$` with `.match`
let `X-Note\\n` through: an email header name the message then wrote as
"X-Note\\n: value" (a bare line feed in the head, the header's value on a line of
its own), an http_request header name the job only failed on when it ran, a Redis
key prefix or a Postgres schema with a line feed in it. Each check now uses
`fullmatch`; found by helper E (stop 61) in SPOOL_QUEUES's check, then looked for in
every pattern of its kind.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.builtin import email as em
from chalicelib.builtin import http_request as hr
from chalicelib.storage import postgres, redis_store
from tests.apikit import Api

URL = "http://127.0.0.1:8080/"


def email(**extra: Any) -> dict[str, Any]:
    return {"to": "ops@example.com", "subject": "hi", "text": "hello", **extra}


@pytest.mark.parametrize("name", ["X-Note\n", "X-Note\r\n", "\nX-Note"])
def test_an_email_header_name_ending_in_a_line_feed_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid header name"):
        em.EmailPayload.model_validate(email(headers={name: "v"}))


def test_an_email_header_name_that_is_whole_is_kept() -> None:
    payload = em.EmailPayload.model_validate(email(headers={"X-Note": "v"}))
    assert payload.headers == {"X-Note": "v"}


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n"])
def test_an_http_request_header_name_ending_in_a_line_feed_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid header name"):
        hr.HttpRequestPayload.model_validate({"url": URL, "headers": {name: "v"}})
    with pytest.raises(ValidationError, match="response_headers must be header names"):
        hr.HttpRequestPayload.model_validate({"url": URL, "response_headers": [name]})


def test_enqueue_answers_422_for_such_a_name_and_stores_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "127.0.0.1")
    job: dict[str, Any] = {
        "type": "http_request",
        "payload": {"url": URL, "headers": {"X-A\n": "v"}},
        "idempotency_key": "s61-trailing-newline",
    }
    reply = api.post("/enqueue", job)
    assert reply.status == 422, reply.body
    [error] = reply.json["error"]["details"]["errors"]
    assert error["loc"] == ["payload", "headers"]
    assert "invalid header name 'X-A\\n'" in error["msg"]
    assert api.get("/jobs?type=http_request").json["jobs"] == []
    job["payload"]["headers"] = {"X-A": "v"}
    assert api.post("/enqueue", job).status == 201


def test_a_redis_prefix_ending_in_a_line_feed_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix must be"):
        redis_store.parse_url("redis://127.0.0.1:6379/0?prefix=spool%0A")
    assert redis_store.parse_url("redis://127.0.0.1:6379/0?prefix=spool").prefix == "spool"


def test_a_postgres_schema_ending_in_a_line_feed_is_refused() -> None:
    with pytest.raises(ValueError, match="schema must be"):
        postgres.parse_url("postgresql://127.0.0.1/test?schema=jobs%0A")
    assert postgres.parse_url("postgresql://127.0.0.1/test?schema=jobs").schema == "jobs"
