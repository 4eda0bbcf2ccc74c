"""A number too large for a float, sent where the API reads a float (`delay`, a
handler's float field, `?wait=`), is refused 422 as too large, not as "not a finite
number" or "not a valid number": the client sent a valid, finite number (an integer
of 309 digits, 1e999 in a query string; JSON bodies refuse 1e999 itself with 400
before this). Nothing is stored. Real HTTP over a socket to `spool serve`'s server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chalicelib import runtime
from chalicelib.handlers import Registry
from chalicelib.number_text import TOO_LARGE
from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange, served

HUGE = "9" * 400  # finite, an int to JSON and Python; float() of it overflows


class Floaty(BaseModel):
    x: float  # a plain float field, as a user's handler declares one


@pytest.fixture
def server(tmp_path: Path, registry_restored: Registry) -> Iterator[Server]:
    """`floaty` goes on the process-wide registry (the served runtime's) for the test
    alone: registry_restored takes it off after."""
    with served(tmp_path) as running:
        runtime.current().registry.handler("floaty", payload=Floaty)(lambda payload: {})
        yield running


def request(
    server: Server, method: str, target: str, body: bytes = b""
) -> tuple[int, dict[str, Any]]:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, answer = exchange(server, head + body)
    assert isinstance(answer, dict)
    return status, answer


def jobs(server: Server) -> list[dict[str, Any]]:
    status, page = request(server, "GET", "/jobs")
    assert status == 200
    listed: list[dict[str, Any]] = page["jobs"]
    return listed


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"type": "echo", "delay": HUGE}', ["delay"]),
        ('{"type": "echo", "delay": -HUGE}', ["delay"]),
        ('{"jobs": [{"type": "echo"}, {"type": "echo", "delay": HUGE}]}', ["delay"]),
        ('{"type": "floaty", "payload": {"x": HUGE}}', ["x"]),
    ],
)
def test_a_body_number_too_large_for_a_float_is_said_to_be_too_large(
    server: Server, body: str, loc: list[str]
) -> None:
    status, answer = request(server, "POST", "/enqueue", body.replace("HUGE", HUGE).encode())
    assert status == 422, answer
    text = json.dumps(answer)
    assert TOO_LARGE in text
    assert "finite number" not in text
    assert json.dumps(loc)[1:-1] in text  # the field is named
    assert jobs(server) == []  # nothing stored, not even the batch's valid job


@pytest.mark.parametrize("wait", ["1e999", HUGE])
def test_a_wait_too_large_for_a_float_is_said_to_be_too_large(server: Server, wait: str) -> None:
    status, created = request(server, "POST", "/enqueue", b'{"type": "echo", "delay": 60}')
    assert status == 201
    status, answer = request(server, "GET", f"/status/{created['id']}?wait={wait}")
    assert status == 422, answer
    assert answer["error"]["message"] == f"query parameter 'wait' is invalid: {TOO_LARGE}"


def test_a_number_that_is_not_finite_is_still_said_to_be_so() -> None:
    """Only finite input is reworded: pydantic's words stay for a real infinity (a
    Python caller's float('inf'))."""
    from pydantic import BaseModel, Field, ValidationError

    from chalicelib.api.errors import validation_details

    class Model(BaseModel):
        x: float = Field(allow_inf_nan=False)

    with pytest.raises(ValidationError) as caught:
        Model.model_validate({"x": float("inf")})
    [detail] = validation_details(caught.value)
    assert detail["msg"] == "Input should be a finite number"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"type": "echo", "delay": "1h"}', "delay is a JSON number of seconds"),
        ('{"type": "echo", "delay": "3600"}', "delay is a JSON number of seconds"),
        ('{"jobs": [{"type": "echo"}, {"type": "echo", "delay": "5m"}]}', "give run_at"),
        ('{"type": "echo", "priority": "3"}', "send a JSON number, not text in quotes"),
        ('{"type": "floaty", "payload": {"x": "2.5"}}', "send a JSON number, not text"),
    ],
)
def test_text_where_a_number_belongs_is_said_to_be_text(
    server: Server, body: str, words: str
) -> None:
    """ "1h" or "3600" for delay got "Input should be a valid number", which named
    neither the quotes nor the unit (seconds); nothing is stored."""
    status, answer = request(server, "POST", "/enqueue", body.encode())
    assert status == 422, answer
    assert words in json.dumps(answer)
    assert jobs(server) == []


def test_a_query_number_keeps_its_own_words(server: Server) -> None:
    """A query string's numbers can only be text: no "not text in quotes" there."""
    status, answer = request(server, "GET", "/jobs?limit=abc")
    assert status == 422, answer
    assert "quotes" not in json.dumps(answer)
