"""Settings a new user can get wrong, refused where they are read, naming the fix.

Every number Settings.from_env reads has a range (chalicelib/config.py BOUNDS):
outside it the value is not a setting but a broken one (a lease of 0 buried
jobs unrun, a concurrency of 0 divided by zero). Every flag is strict: `ture`
is refused, not read as false. And the client side: an empty SPOOL_API_KEY is
no key, and a 503 `misconfigured` is raised at once, not retried for a minute.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from chalicelib import settings_catalog
from chalicelib.config import BOUNDS, FLAG_FALSE, FLAG_TRUE, ConfigError, Settings
from local import remote_cli
from spool_client import (
    AsyncClient,
    Client,
    Misconfigured,
    RetryPolicy,
    StoreUnavailable,
    Unauthorized,
    calls,
)
from spool_client.retry import retried_answer

FIELDS = {s.name: s.field for s in settings_catalog.CATALOG if s.field}


def _n(value: float) -> str:
    """A number as a person types it: 1000000, not 1e+06."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _range(name: str) -> str:
    minimum, maximum, unit = BOUNDS[name]
    return f"between {_n(minimum)} and {_n(maximum)} {unit}"


# -- numbers: refused outside their range, with the range named --------------------------


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_each_bounded_setting_takes_its_limits_and_refuses_past_them(name: str) -> None:
    minimum, maximum, _ = BOUNDS[name]
    field = FIELDS[name]
    assert field is not None
    for inside in (minimum, maximum):
        settings = Settings.from_env({name: _n(inside)})
        assert getattr(settings, field) == inside
    for outside in (minimum - 1, maximum + 1, -1e9, 1e300):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({name: _n(outside)})
        assert str(refused.value).startswith(f"{name} must be {_range(name)}, not ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPOOL_LEASE_SECONDS", "0"),  # every claim expired at once: buried, never run
        ("SPOOL_LEASE_SECONDS", "-5"),
        ("SPOOL_LEASE_SECONDS", "1"),  # could lapse between two renewals
        ("SPOOL_CONCURRENCY", "0"),  # ZeroDivisionError in the worker
        ("SPOOL_CONCURRENCY", "-2"),
        ("SPOOL_MAX_BATCH", "0"),  # every batch 413
        ("SPOOL_MAX_BODY_BYTES", "-1"),  # even GET /health 413
        ("SPOOL_MAX_BODY_BYTES", "0"),
        ("SPOOL_CACHE_SIZE", "-1"),
        ("SPOOL_CACHE_TTL", "-0.5"),
    ],
)
def test_the_values_a_new_user_tried_are_refused_naming_the_range(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value) == f"{name} must be {_range(name)}, not {value}"


@pytest.mark.parametrize("name", ["SPOOL_LEASE_SECONDS", "SPOOL_CACHE_TTL"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_seconds_that_are_no_number_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be a finite number"):
        Settings.from_env({name: value})


@pytest.mark.parametrize("name", ["SPOOL_CONCURRENCY", "SPOOL_MAX_BATCH", "SPOOL_MAX_BODY_BYTES"])
@pytest.mark.parametrize("value", ["nan", "1.5", "9" * 5000])
def test_whole_numbers_that_are_not_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be a whole number"):
        Settings.from_env({name: value})


def test_zero_turns_the_result_cache_off_and_is_accepted() -> None:
    settings = Settings.from_env({"SPOOL_CACHE_SIZE": "0", "SPOOL_CACHE_TTL": "0"})
    assert (settings.cache_size, settings.cache_ttl) == (0, 0)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_the_catalog_states_each_range(name: str) -> None:
    """docs/settings.md (generated from the catalog) tells the range config.py keeps."""
    minimum, maximum, _ = BOUNDS[name]
    meaning = settings_catalog.BY_NAME[name].meaning
    assert f"{_n(minimum)} to {_n(maximum)}" in meaning, (name, meaning)


def test_a_one_sided_range_reads_as_one() -> None:
    """Settings.number/integer (the settings read from `extra`) name the range too,
    never "between 1 and None"."""
    settings = Settings.from_env({"SPOOL_MAX_WAITS": "0", "SPOOL_HEALTH_CACHE_SECONDS": "61"})
    with pytest.raises(ConfigError, match=r"^SPOOL_MAX_WAITS must be at least 1, not 0$"):
        settings.integer("SPOOL_MAX_WAITS", 8, 1)
    with pytest.raises(ConfigError, match=r"must be between 0 and 60, not 61$"):
        settings.number("SPOOL_HEALTH_CACHE_SECONDS", 5.0, 0, 60)
    with pytest.raises(ConfigError, match=r"must be at most 2, not 61$"):
        settings.number("SPOOL_HEALTH_CACHE_SECONDS", 5.0, maximum=2)


# -- flags: one strict reading everywhere --------------------------------------------------

FLAGS = ("SPOOL_DEMO_HANDLERS", "SPOOL_METRICS_PUBLIC")


@pytest.mark.parametrize("name", FLAGS)
@pytest.mark.parametrize("typo", ["ture", "enabled", "2", "y"])
def test_a_misspelled_flag_is_refused_naming_it(name: str, typo: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: typo})
    assert str(refused.value) == (
        f"{name} must be true or false (also 1/0, yes/no, on/off), not {typo!r}"
    )
    # The flags read from `extra` (SPOOL_FAIR_TENANTS, SPOOL_SYNC_FINISH...) say the same.
    with pytest.raises(ConfigError) as same:
        Settings.from_env({"SPOOL_SYNC_FINISH": typo}).flag("SPOOL_SYNC_FINISH")
    assert str(same.value) == str(refused.value).replace(name, "SPOOL_SYNC_FINISH")


@pytest.mark.parametrize("name", FLAGS)
def test_every_value_the_docs_list_is_taken(name: str) -> None:
    field = FIELDS[name]
    assert field is not None
    for word in FLAG_TRUE:
        for text in (word, word.upper(), f" {word} "):
            assert getattr(Settings.from_env({name: text}), field) is True
    for word in FLAG_FALSE:
        assert getattr(Settings.from_env({name: word.upper()}), field) is False
    assert getattr(Settings.from_env({name: ""}), field) is False  # empty is unset
    page = settings_catalog.render()
    assert "A flag is `true`/`false` (also\n`1`/`0`, `yes`/`no`, `on`/`off`)" in page


# -- the client: an empty key is no key; misconfigured is not retried ----------------------


def test_an_empty_api_key_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_API_KEY", "")
    assert calls.settings("http://127.0.0.1:8000", None) == ("http://127.0.0.1:8000", None)
    monkeypatch.setenv("SPOOL_API_KEY", "   ")
    assert calls.settings("http://127.0.0.1:8000", None)[1] is None
    assert calls.settings("http://127.0.0.1:8000", "")[1] is None
    with Client("http://127.0.0.1:8000") as client:
        assert client.key is None and "X-API-Key" not in client._headers
    with pytest.raises(ValueError, match="visible ASCII"):  # a key with a space still is wrong
        calls.settings("http://127.0.0.1:8000", "a key")


def test_an_empty_api_key_reaches_the_server_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_API_KEY", "")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"error": {"code": "unauthorized", "message": "missing API key"}}
        return httpx.Response(401, json=body)

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        client = Client("http://spool.test", http=http)
        with pytest.raises(Unauthorized, match="missing API key"):
            client.get("j_x")
    assert "x-api-key" not in seen[0].headers


MISCONFIGURED = {
    "error": {
        "code": "misconfigured",
        "message": "the server is misconfigured: its operator must fix a setting "
        "(the server's log names it)",
    }
}


def test_a_misconfigured_answer_is_not_retried_other_503s_are() -> None:
    assert not retried_answer(503, MISCONFIGURED)
    assert retried_answer(503, {"error": {"code": "store_unavailable", "message": "down"}})
    assert retried_answer(503, None)  # a proxy's page: the server behind may come back
    assert retried_answer(429, {"error": {"code": "too_many_waits"}})
    assert not retried_answer(500, None)


def _counting(status: int, body: dict[str, Any]) -> tuple[list[int], httpx.MockTransport]:
    tries: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        tries.append(1)
        return httpx.Response(status, json=body)

    return tries, httpx.MockTransport(answer)


def test_health_against_a_misconfigured_server_raises_at_once() -> None:
    tries, transport = _counting(503, MISCONFIGURED)
    started = time.monotonic()
    with httpx.Client(transport=transport) as http, pytest.raises(Misconfigured):
        Client("http://spool.test", "k", http=http).health()
    assert len(tries) == 1 and time.monotonic() - started < 2


def test_the_async_client_does_not_retry_it_either() -> None:
    tries, transport = _counting(503, MISCONFIGURED)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(Misconfigured):
                await AsyncClient("http://spool.test", "k", http=http).health()

    asyncio.run(scenario())
    assert len(tries) == 1


def test_a_store_outage_is_still_retried() -> None:
    down = {"error": {"code": "store_unavailable", "message": "the store is down"}}
    tries, transport = _counting(503, down)
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.01)
    with httpx.Client(transport=transport) as http, pytest.raises(StoreUnavailable):
        Client("http://spool.test", "k", retry=policy, http=http).health()
    assert len(tries) == 3


def test_the_remote_cli_gives_one_hint_for_misconfigured() -> None:
    """Not also "busy or its store is down: try again later": no retry fixes a setting."""
    error = Misconfigured(503, "misconfigured", MISCONFIGURED["error"]["message"], None, None)
    failure = remote_cli.explain(error)
    assert failure.problem == MISCONFIGURED["error"]["message"]
    assert "try again" not in failure.fix and "busy" not in failure.fix
    outage = StoreUnavailable(503, "store_unavailable", "the store is down", None, None)
    assert re.search("try again later", remote_cli.explain(outage).fix)


@pytest.mark.parametrize("raw", ["bad queue", "mail,bad/queue", "x" * 65])
def test_a_queue_no_job_can_carry_is_refused_in_spool_queues(raw: str) -> None:
    """A worker on SPOOL_QUEUES='bad queue' claimed nothing and said nothing."""
    with pytest.raises(ConfigError, match="SPOOL_QUEUES"):
        Settings.from_env({"SPOOL_QUEUES": raw})


@pytest.mark.parametrize("raw", [",,", " , "])
def test_a_spool_queues_that_names_no_queue_is_refused(raw: str) -> None:
    """SPOOL_QUEUES=",," was read as unset: the worker served every queue, silently."""
    with pytest.raises(ConfigError, match="names no queue"):
        Settings.from_env({"SPOOL_QUEUES": raw})
    assert Settings.from_env({"SPOOL_QUEUES": ""}).queues is None  # unset stays unset


def test_spool_queues_takes_every_name_enqueue_takes() -> None:
    from chalicelib import config, service

    assert config.QUEUE_NAME.pattern == service.NAME_PATTERN
    assert Settings.from_env({"SPOOL_QUEUES": " mail , a.b:c-d_e "}).queues == ("mail", "a.b:c-d_e")
