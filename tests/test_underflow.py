"""A number written too small for a float (1e-400) is refused, never read as 0.

float("1e-400") is 0.0 without a word. Where 0 means "off", a tiny positive
value became "off": a Postgres URL's statement_timeout=1e-400 was no statement
bound at all, SPOOL_CACHE_TTL=1e-400 no cache; where a number must be above 0
(http_request's timeout) the client was told its positive number was not. Spool
refuses such text wherever it reads numbers, as it refuses 1e999 (overflow).
Zero written as zero (0, 0.0, 0e-400, -0.0) is still zero, and the smallest
floats (5e-324) are still themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.config import ConfigError, Settings
from chalicelib.durations import parse_seconds
from chalicelib.jsonstrict import loads_strict
from chalicelib.number_text import underflows
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb_aws import DynamoConfig
from chalicelib.storage.postgres import parse_url
from tests.apikit import Api

TOO_SMALL = "is too small to hold as a number: it would be read as 0"


@pytest.mark.parametrize("text", ["1e-400", "-1e-400", "0.1e-330", "9E-999", "1_0e-400"])
def test_a_literal_below_the_smallest_float_underflows(text: str) -> None:
    assert float(text) == 0.0
    assert underflows(text, float(text))


@pytest.mark.parametrize("text", ["0", "0.0", "-0.0", "0e-400", "0.000e5", "5e-324", "1e-310"])
def test_zero_and_the_smallest_floats_do_not(text: str) -> None:
    assert not underflows(text, float(text))


@pytest.mark.parametrize(
    "doc", ['{"delay": 1e-400}', "[1E-999]", '{"x": {"y": [-0.5e-330]}}'], ids=str
)
def test_json_refuses_an_underflowing_number(doc: str) -> None:
    with pytest.raises(json.JSONDecodeError, match=TOO_SMALL) as refused:
        loads_strict(doc)
    assert doc[refused.value.pos :].lstrip("-").startswith(("1", "0.5", "9"))


def test_json_still_reads_zero_and_tiny_floats() -> None:
    assert loads_strict("[0e-400, -0.0, 5e-324, 0.0]") == [0.0, -0.0, 5e-324, 0.0]


def stored(rt: Runtime) -> int:
    return sum(rt.store.counts().values())


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "echo", "delay": 1e-400}',
        b'{"type": "http_request", "payload": {"url": "https://example.com", "timeout": 1e-400}}',
    ],
    ids=["delay", "http-timeout"],
)
def test_the_api_refuses_it_with_400_naming_the_number(api: Api, rt: Runtime, raw: bytes) -> None:
    reply = api.post("/enqueue", raw=raw)
    assert reply.status == 400 and reply.error_code == "bad_request", reply.body
    assert TOO_SMALL in reply.json["error"]["details"]["reason"]
    assert "1e-400" in reply.json["error"]["details"]["reason"]
    assert stored(rt) == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("SPOOL_CACHE_TTL", "1e-400"), ("SPOOL_LEASE_SECONDS", "1e-400")],
)
def test_a_setting_that_underflows_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: 1e-400 {TOO_SMALL}; write 0 if you mean 0"):
        Settings.from_env({name: value})


def test_a_handler_setting_that_underflows_is_refused() -> None:
    settings = Settings.from_env({"SPOOL_WEBHOOK_BACKOFF": "1e-400"})
    with pytest.raises(ConfigError, match=f"SPOOL_WEBHOOK_BACKOFF: 1e-400 {TOO_SMALL}"):
        settings.number("SPOOL_WEBHOOK_BACKOFF", 5.0, 0.0, 3600.0)
    assert Settings.from_env({"SPOOL_CACHE_TTL": "0e-400"}).cache_ttl == 0.0


def test_a_duration_that_underflows_is_refused() -> None:
    text = "0." + "0" * 400 + "1s"
    with pytest.raises(ValueError, match=TOO_SMALL):
        parse_seconds(text)
    assert parse_seconds("0." + "0" * 400 + "s") == 0.0


def test_a_postgres_statement_timeout_that_underflows_is_no_unbounded_session() -> None:
    with pytest.raises(ConfigError, match=f"statement_timeout: 1e-400 {TOO_SMALL}"):
        parse_url("postgresql://u@127.0.0.1/db?statement_timeout=1e-400")
    with pytest.raises(ConfigError, match=f"pool_timeout: 1e-400 {TOO_SMALL}"):
        parse_url("postgresql://u@127.0.0.1/db?pool_timeout=1e-400")
    assert parse_url("postgresql://u@127.0.0.1/db?statement_timeout=0").statement_timeout == 0


def test_a_dynamodb_option_that_underflows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"reap_every: 1e-400 {TOO_SMALL}"):
        DynamoConfig.from_url("dynamodb://jobs?reap_every=1e-400")
    assert DynamoConfig.from_url("dynamodb://jobs?reap_every=0").reap_every == 0.0
