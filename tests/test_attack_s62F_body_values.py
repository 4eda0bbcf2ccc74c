"""A body of many small JSON values is refused before it is parsed.

json.loads makes a Python object of every value: `{}` is 3 bytes of text and about
90 bytes of dict, so a 10 MB body of them (SPOOL_MAX_BODY_BYTES raised to its 10 MiB
ceiling) took about 280 MB of the server's memory before anything in it was refused,
per request thread at once. A body may hold at most SPOOL_MAX_BODY_VALUES values
(arrays, objects, members and elements, counted from the bytes, strings skipped):
past it, 413 before any object is built. The default is what the default 256 KiB
body can hold at most, so nothing that fits that limit is refused for it.

Real sockets against `spool serve`'s server (tests/served.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib import jsonstrict
from chalicelib.json_values import DEFAULT_MAX_BODY_VALUES, values_over
from local.http_limits import HttpLimits
from local.server import ChaliceWSGI, Server
from tests.apikit import installed, settings_for
from tests.served import post

BIG = 4 * 1024 * 1024


@contextmanager
def served(tmp_path: Path, **settings: Any) -> Iterator[Server]:
    """app.py behind `spool serve`'s server, its HTTP body limit the app's (as `spool
    serve` sets it: HttpLimits.from_settings)."""
    with installed(settings_for(tmp_path, demo_handlers=True, **settings)) as rt:
        limits = HttpLimits.from_settings(rt.settings)
        running = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2, limits=limits)
        running.start()
        try:
            yield running
        finally:
            running.stop()


def _payload_of(values: int, item: bytes = b"0") -> bytes:
    """An enqueue of one echo job whose payload is an array of `values` items."""
    return b'{"type":"echo","payload":{"xs":[' + b",".join([item] * values) + b"]}}"


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every body json would parse, its length: a refused one must never get there."""
    parsed: list[int] = []
    real = jsonstrict._DECODER.decode

    def decode(text: str) -> object:
        parsed.append(len(text))
        return real(text)

    monkeypatch.setattr(jsonstrict._DECODER, "decode", decode)
    return parsed


@pytest.mark.parametrize("item", [b"{}", b"[]", b"0", b'"ab"'])
def test_a_body_of_more_values_than_allowed_is_refused_unparsed(
    tmp_path: Path, no_parse: list[int], item: bytes
) -> None:
    body = _payload_of(DEFAULT_MAX_BODY_VALUES + 10, item)
    assert len(body) <= BIG
    with served(tmp_path, max_body_bytes=BIG) as server:
        status, answer = post(server, "/enqueue", body)
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert "SPOOL_MAX_BODY_VALUES" in answer["error"]["message"]
    assert answer["error"]["details"]["limit_values"] == DEFAULT_MAX_BODY_VALUES
    assert [n for n in no_parse if n >= len(body)] == []


def test_a_batch_of_empty_objects_is_refused_unparsed(tmp_path: Path, no_parse: list[int]) -> None:
    """The earlier helper's body: `{"jobs": [{}, {}, ...]}`."""
    body = b'{"jobs":[' + b",".join([b"{}"] * (BIG // 4)) + b"]}"
    with served(tmp_path, max_body_bytes=BIG) as server:
        status, answer = post(server, "/enqueue", body)
    assert status == 413, answer
    assert "SPOOL_MAX_BODY_VALUES" in answer["error"]["message"]
    assert [n for n in no_parse if n >= len(body)] == []


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    body = _payload_of(DEFAULT_MAX_BODY_VALUES + 10)
    extra = {"SPOOL_MAX_BODY_VALUES": str(DEFAULT_MAX_BODY_VALUES * 2)}
    with served(tmp_path, max_body_bytes=BIG, extra=extra) as server:
        status, answer = post(server, "/enqueue", body)
    assert status == 201, answer


def test_a_body_at_the_default_limit_is_taken(tmp_path: Path) -> None:
    """The fullest body of values the default 256 KiB limit takes is never refused for
    its count: every value takes at least two bytes (itself and a comma)."""
    values = (256 * 1024 - len(_payload_of(0))) // 2
    body = _payload_of(values)
    assert len(body) <= 256 * 1024
    with served(tmp_path) as server:
        status, answer = post(server, "/enqueue", body)
    assert status == 201, answer


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("{}", 1),
        ("[]", 1),
        ("0", 1),
        ('"a,b,[{"', 1),
        ('["a\\",[{", 1, {}]', 4),
        ('{"a": [1, 2], "b": {"c": null}}', 6),
        ("  [ 1 , 2 ]  ", 3),
    ],
)
def test_values_are_counted_outside_strings(text: str, count: int) -> None:
    """Every array, object, member and element, once; what is inside a string, never."""
    assert not values_over(text.encode(), count)
    assert values_over(text.encode(), count - 1)
    json.loads(text)  # each is JSON
