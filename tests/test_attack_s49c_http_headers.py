"""An http_request header value that can never go on the wire is refused when enqueued.

Was (stop 49, found by enqueueing `"headers": {"X-A": "€"}` against `spool serve`):
the payload model refused only CR, LF and NUL in a header value. A value holding a
character beyond U+00FF was stored (201), and every attempt opened a connection to
the target and then died in http.client ("UnicodeEncodeError: 'latin-1' codec can't
encode character '\\u20ac'"), retried with backoff until the job was dead five
attempts later. The other control characters (U+0001, U+000B, U+007F ...), which
RFC 9110 does not allow in a field value, went out raw to the target.

Now such a value is a 422 naming the header, and nothing is stored; a value of
visible characters, spaces, tabs and Latin-1 letters (obs-text) is still sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.builtin import http_request as hr
from tests.apikit import Api

URL = "http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    "value",
    ["\u20ac", "caf\u00e9 \u2028", "a\u0001b", "a\u000bb", "a\u007fb", "\u202e"],
)
def test_a_header_value_that_cannot_be_sent_is_refused_by_the_model(value: str) -> None:
    with pytest.raises(ValidationError, match="X-A"):
        hr.HttpRequestPayload.model_validate({"url": URL, "headers": {"X-A": value}})


@pytest.mark.parametrize("value", ["plain", "a\tb", "caf\u00e9", "Bearer abc/+=", " spaced "])
def test_a_header_value_that_can_be_sent_is_kept(value: str) -> None:
    payload = hr.HttpRequestPayload.model_validate({"url": URL, "headers": {"X-A": value}})
    assert payload.headers == {"X-A": value}


def test_enqueue_answers_422_and_stores_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "127.0.0.1")
    job: dict[str, Any] = {
        "type": "http_request",
        "payload": {"url": URL, "headers": {"X-A": "\u20ac"}},
        "idempotency_key": "s49c-header",
    }
    reply = api.post("/enqueue", job)
    assert reply.status == 422, reply.body
    [error] = reply.json["error"]["details"]["errors"]
    assert error["loc"] == ["payload", "headers"]
    assert "header 'X-A' holds U+20AC" in error["msg"]
    listed = api.get("/jobs?type=http_request")
    assert listed.status == 200 and listed.json["jobs"] == []
    # The key was not taken by a half-written job: a good request under it is stored.
    job["payload"]["headers"] = {"X-A": "ok"}
    assert api.post("/enqueue", job).status == 201
