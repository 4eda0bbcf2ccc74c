"""A payload too large for the answers that return it is refused when it is enqueued.

Was (stop 49, found by enqueueing at the top of SPOOL_MAX_BODY_BYTES' range): the
setting goes up to 10 MiB (API Gateway's request limit), but every answer that
carries the job carries its payload (GET /status, GET /jobs, the dashboard's job,
cancel's and redrive's answers), and Lambda refuses an answer over 6 MB: API
Gateway turns that into a 502. An 8 MB body of "é" was stored (201), and each of
those answers was 29 MB (each "é" is `\\u00e9` in the answer, and Lambda escapes
the backslash again): the job could be neither read nor listed, and it ended the
tenant's /jobs pages at it.

Now a job whose payload takes more than PAYLOAD_ANSWER_BYTES in those answers (as
Lambda counts them) is refused 413 on enqueue, on every edge, and nothing of its
request is stored; one at the limit is stored and its answers fit Lambda's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib.api import http as api_http
from chalicelib.api.routes import PAYLOAD_ANSWER_BYTES
from local.emulator import context
from tests.apikit import installed, settings_for
from tests.test_lambda_vs_served import _req, gateway_event

# Lambda's limit on a synchronous answer (the whole JSON document it hands back).
LAMBDA_ANSWER_BYTES = 6 * 1024 * 1024
MAX_BODY = 10 * 1024 * 1024


@pytest.fixture
def lambda_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    with installed(settings_for(tmp_path, max_body_bytes=MAX_BODY, demo_handlers=True)):
        yield


def _call(method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = spool_app.app(
        gateway_event(_req(method, path, body)), context("api_handler")
    )
    return answer


def _job(text: str) -> dict[str, Any]:
    return {"type": "echo", "payload": {"s": text}}


def _carried(payload: Any) -> int:
    """What the payload takes in a Lambda answer: the answer's JSON (ASCII), with
    every quote and backslash escaped once more in Lambda's document."""
    text = api_http.dumps(payload)
    return len(text) + text.count('"') + text.count("\\")


def _nothing_stored() -> None:
    listed = _call("GET", "/jobs")
    assert (listed["statusCode"], json.loads(listed["body"])["jobs"]) == (200, [])


def test_a_payload_whose_answers_lambda_cannot_return_is_413_and_nothing_is_stored(
    lambda_app: None,
) -> None:
    body = json.dumps(_job("é" * (4 * 1024 * 1024)), ensure_ascii=False).encode()
    assert len(body) < MAX_BODY  # within the body limit: only its answers are too big
    answer = _call("POST", "/enqueue", body)
    assert answer["statusCode"] == 413, answer["body"][:300]
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"]["limit"] == PAYLOAD_ANSWER_BYTES
    assert error["details"]["size"] > PAYLOAD_ANSWER_BYTES
    assert "GET /status" in error["message"]
    _nothing_stored()


def test_a_batch_holding_one_such_payload_stores_none_of_its_jobs(lambda_app: None) -> None:
    jobs = [_job("small"), _job("\U0001f600" * (1024 * 1024)), _job("small too")]
    body = json.dumps({"jobs": jobs}, ensure_ascii=False).encode()
    answer = _call("POST", "/enqueue", body)
    assert answer["statusCode"] == 413, answer["body"][:300]
    error = json.loads(answer["body"])["error"]
    assert error["details"]["index"] == 1
    _nothing_stored()


@pytest.mark.parametrize("over", [0, 1])
def test_a_payload_at_the_limit_is_stored_and_every_answer_carrying_it_fits_lambda(
    lambda_app: None, over: int
) -> None:
    text = "a" * (PAYLOAD_ANSWER_BYTES - _carried(_job("")["payload"]) + over)
    assert _carried(_job(text)["payload"]) == PAYLOAD_ANSWER_BYTES + over
    answer = _call("POST", "/enqueue", json.dumps(_job(text)).encode())
    if over:
        assert answer["statusCode"] == 413, answer["body"][:300]
        _nothing_stored()
        return
    assert answer["statusCode"] == 201, answer["body"][:300]
    job_id = json.loads(answer["body"])["id"]
    for method, path in [
        ("GET", f"/status/{job_id}"),
        ("GET", "/jobs"),
        ("GET", f"/ui/api/jobs/{job_id}"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ]:
        read = _call(method, path)
        assert read["statusCode"] == 200, (path, read["body"][:300])
        assert len(json.dumps(read)) < LAMBDA_ANSWER_BYTES, path


def test_payloads_within_the_default_body_limit_are_never_near_it() -> None:
    """The check costs nothing at the default SPOOL_MAX_BODY_BYTES (256 KiB): no body
    that size can hold a payload that grows past the limit in an answer."""
    from chalicelib.api.routes import ANSWER_GROWTH
    from chalicelib.config import Settings

    assert Settings().max_body_bytes * ANSWER_GROWTH <= PAYLOAD_ANSWER_BYTES


@pytest.mark.parametrize(
    "unit",
    ["é", "\U0001f600", "\u2028", "\\u0001", "\\n", '\\"', "\\\\", "\\/", "a"],
    ids=["2-byte", "4-byte", "3-byte", "u-escape", "n-escape", "quote", "backslash", "slash", "a"],
)
def test_no_string_grows_past_answer_growth_in_an_answer(unit: str) -> None:
    """The bound that lets most bodies skip the measure holds for the characters that
    grow most: a string of each, and numbers that Python writes longer than sent."""
    from chalicelib.api.routes import ANSWER_GROWTH
    from chalicelib.jsonstrict import loads_strict

    for body in (
        f'{{"type":"echo","payload":{{"s":"{unit * 1000}"}}}}',
        '{"type":"echo","payload":{"n":[' + ",".join(["1e15"] * 1000) + "]}}",
        '{"type":"echo","payload":{"n":1e15}}',
        '{"type":"echo","payload":{"n":9E15,"m":1e-7,"k":0.1e1}}',
    ):
        raw = body.encode()
        payload = loads_strict(raw)["payload"]
        assert _carried(payload) <= len(raw) * ANSWER_GROWTH, body[:60]
