"""Every query parameter of every route, probed over a real socket (`spool serve`).

One reader (chalicelib/api/query.py) reads every route's query string. These tests
walk routes.ROUTES and routes.QUERIES, so a route or parameter added later is walked
too: each parameter takes its documented spellings and refuses everything else with
a 4xx whose message names it; nothing is a 500, nothing a silent default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.api import query, routes
from tests.apikit import API_KEYS, KEY_A, OPERATOR_KEY
from tests.procs import guarded_env, spool_serve_logged, stop

# A valid value of each parameter of each route (what the walk starts from).
VALID: dict[tuple[str, str], str] = {
    ("status", "wait"): "0",
    ("status", "attempts"): "true",
    ("status", "webhooks"): "false",
    ("list_jobs", "state"): "queued",
    ("list_jobs", "queue"): "default",
    ("list_jobs", "type"): "echo",
    ("list_jobs", "limit"): "5",
    ("list_jobs", "cursor"): "",  # filled in from a real page (see cursor below)
    ("dlq", "queue"): "default",
    ("dlq", "type"): "echo",
    ("dlq", "limit"): "5",
    ("dlq", "cursor"): "",
    ("ui_jobs", "state"): "queued",
    ("ui_jobs", "queue"): "default",
    ("ui_jobs", "type"): "echo",
    ("ui_jobs", "limit"): "5",
    ("ui_jobs", "cursor"): "",
    ("ui_jobs", "find"): "some-key",
}
NASTY = [
    "%00",  # NUL
    "%FF%FE",  # not UTF-8
    "%E2%80%AE",  # a right-to-left override
    "..%2F..%2Fetc%2Fpasswd",
    "%3Cscript%3E",
    "9" * 5000,
    "x" * (query.MAX_VALUE + 1),
    "%20",
    "true%20",
]


# Not numbers as a query string writes one (each is a name a queue may have).
NOT_NUMBERS = [
    "%D9%A3",  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
    "%EF%BC%95",  # FULLWIDTH DIGIT FIVE
    "1e999",
    "NaN",
    "Infinity",
    "-0",
    "0x10",
    "1_0",
    "1e-400",
]


def _params() -> list[tuple[str, str]]:
    return [(op, name) for op, model in routes.QUERIES.items() for name in model.model_fields]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("query-params")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=operator",
        SPOOL_DEMO_HANDLERS="true",
    )
    child = spool_serve_logged(folder / "serve.log", "--threads", "4", env=env)
    try:
        url = child.url
        jobs = [{"type": "echo", "payload": {"n": n}, "delay": 86400} for n in (1, 2)]
        made = _get(url, "POST", "/enqueue", json={"jobs": jobs})
        assert made.status_code == 201, made.text
        job_id = made.json()["jobs"][0]["id"]
        page = _get(url, "GET", "/jobs?limit=1")
        # The dashboard lists newest first: its cursors are its own (a /jobs one is 400).
        newest = _get(url, "GET", "/ui/api/jobs?limit=1")
        yield {
            "url": url,
            "job": job_id,
            "cursor": page.json()["next_cursor"],
            "ui_cursor": newest.json()["next_cursor"],
        }
    finally:
        stop(child.proc)


def _get(url: str, method: str, path: str, key: str | None = KEY_A, **kw: Any) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.request(method, url + path, headers=headers, timeout=30, **kw)


def _path(operation: str, job_id: str) -> tuple[str, str]:
    method, template = routes.ROUTES[operation]
    return method, template.replace("{id}", job_id).replace("{name}", "app.js")


def _valid(operation: str, name: str, served: dict[str, Any]) -> str:
    if name == "cursor":
        return str(served["ui_cursor" if operation.startswith("ui_") else "cursor"])
    return VALID[(operation, name)]


def _refused(reply: Any, name: str) -> None:
    assert reply.status_code in (400, 422), (reply.status_code, reply.text)
    error = reply.json()["error"]
    assert name[:20] in error["message"], error


def test_the_walk_covers_every_parameter_of_every_route() -> None:
    """A parameter added to a route without a valid value here fails this first."""
    assert set(_params()) == set(VALID)
    assert routes.IGNORED | set(routes.QUERIES) <= set(routes.ROUTES)


@pytest.mark.parametrize(("operation", "name"), _params())
def test_each_parameter_takes_its_valid_value(
    served: dict[str, Any], operation: str, name: str
) -> None:
    method, path = _path(operation, served["job"])
    value = _valid(operation, name, served)
    assert _get(served["url"], method, f"{path}?{name}={value}").status_code == 200


@pytest.mark.parametrize(("operation", "name"), _params())
def test_an_empty_value_is_refused_naming_it(
    served: dict[str, Any], operation: str, name: str
) -> None:
    """Before: `?state=` was a 422 that said only "Input should be ..."; `?find=` too."""
    method, path = _path(operation, served["job"])
    for spelled in (f"{name}=", name):  # `?attempts` alone is an empty value too
        reply = _get(served["url"], method, f"{path}?{spelled}")
        _refused(reply, name)
        assert reply.status_code == 422 and "empty" in reply.json()["error"]["message"]


@pytest.mark.parametrize(("operation", "name"), _params())
def test_a_repeated_parameter_is_a_400(served: dict[str, Any], operation: str, name: str) -> None:
    method, path = _path(operation, served["job"])
    value = _valid(operation, name, served)
    reply = _get(served["url"], method, f"{path}?{name}={value}&{name}={value}")
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["details"]["repeated"] == [name]


@pytest.mark.parametrize(("operation", "name"), _params())
@pytest.mark.parametrize("value", NASTY, ids=range(len(NASTY)))
def test_a_nasty_value_is_a_4xx_naming_the_parameter(
    served: dict[str, Any], operation: str, name: str, value: str
) -> None:
    """Never a 500, never taken as something else (a find is the one free-text one)."""
    method, path = _path(operation, served["job"])
    reply = _get(served["url"], method, f"{path}?{name}={value}")
    if name == "find" and len(value) <= 200 and "%FF" not in value:
        assert reply.status_code == 200 and reply.json()["jobs"] == []  # searched, not found
        return
    _refused(reply, name)


NUMBERS = [
    (op, n)
    for op, n in _params()
    if routes.QUERIES[op].model_fields[n].annotation in (int, float, bool)
]


@pytest.mark.parametrize(("operation", "name"), NUMBERS)
def test_a_number_or_flag_is_ascii_digits_only(
    served: dict[str, Any], operation: str, name: str
) -> None:
    method, path = _path(operation, served["job"])
    for value in NOT_NUMBERS:
        _refused(_get(served["url"], method, f"{path}?{name}={value}"), name)


BOOLS = [(op, n) for op, n in _params() if routes.QUERIES[op].model_fields[n].annotation is bool]


@pytest.mark.parametrize(("operation", "name"), BOOLS)
def test_a_yes_no_parameter_takes_true_false_1_0_only(
    served: dict[str, Any], operation: str, name: str
) -> None:
    """Before: pydantic's lax bool took yes/no/on/off/t/f/y/n in any case too, so
    `?attempts=on` added the attempts and `?attempts=of` was refused."""
    method, path = _path(operation, served["job"])
    for value in ("true", "false", "1", "0"):
        reply = _get(served["url"], method, f"{path}?{name}={value}")
        assert reply.status_code == 200, (value, reply.text)
        shown = name if name != "attempts" else "attempt_history"
        assert (shown in reply.json()) is (value in ("true", "1")), value
    for value in ("yes", "no", "on", "off", "t", "f", "y", "n", "True", "FALSE", "2", "-1", "01"):
        reply = _get(served["url"], method, f"{path}?{name}={value}")
        _refused(reply, name)
        assert reply.status_code == 422 and "true or false" in reply.json()["error"]["message"]


ROUTES_WITHOUT = [
    op for op in routes.ROUTES if op not in routes.QUERIES and op not in routes.IGNORED
]


@pytest.mark.parametrize("operation", ROUTES_WITHOUT)
def test_a_route_without_parameters_refuses_any(served: dict[str, Any], operation: str) -> None:
    """Before: GET /ui/api/overview?queue=x and /openapi.json?x answered as if unasked,
    so a caller filtering the overview got every queue without being told."""
    method, path = _path(operation, served["job"])
    reply = _get(served["url"], method, f"{path}?queue=x", json={})
    _refused(reply, "queue")
    assert "takes no query parameters" in reply.json()["error"]["message"]


@pytest.mark.parametrize("operation", sorted(routes.IGNORED))
def test_probes_and_pages_ignore_their_query(served: dict[str, Any], operation: str) -> None:
    """Load balancers, scrapers and browsers add parameters to these; they read none."""
    method, path = _path(operation, served["job"])
    key = OPERATOR_KEY if operation == "metrics" else KEY_A
    plain = _get(served["url"], method, path, key=key)
    asked = _get(served["url"], method, f"{path}?cachebust=1&cachebust=2", key=key)
    assert plain.status_code == asked.status_code == 200


@pytest.mark.parametrize("operation", [op for op in routes.QUERIES])
def test_an_unknown_parameter_names_itself_and_what_the_route_takes(
    served: dict[str, Any], operation: str
) -> None:
    method, path = _path(operation, served["job"])
    reply = _get(served["url"], method, f"{path}?atempts=true")
    _refused(reply, "atempts")
    message = reply.json()["error"]["message"]
    assert all(name in message for name in routes.QUERIES[operation].model_fields)


@pytest.mark.parametrize(("operation", "name"), _params())
def test_a_value_that_is_not_utf8_is_a_400_not_a_replacement_character(
    served: dict[str, Any], operation: str, name: str
) -> None:
    """Before: `spool serve` decoded %FF as U+FFFD, so `find=%FF` searched for "\ufffd"
    (and matched a key holding one) where the API's rule, kept for Lambda events, is
    that a query string is UTF-8 or a 400."""
    method, path = _path(operation, served["job"])
    for value in ("%FF", "a%C3", "%ED%A0%80"):  # a stray byte, a cut sequence, a surrogate
        reply = _get(served["url"], method, f"{path}?{name}={value}")
        assert reply.status_code == 400, (value, reply.text)
        assert "UTF-8" in reply.json()["error"]["message"]


def test_the_document_names_each_flags_spellings(served: dict[str, Any]) -> None:
    doc = _get(served["url"], "GET", "/openapi.json").json()
    flags = [
        p
        for item in doc["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["in"] == "query" and p["schema"].get("type") == "boolean"
    ]
    assert len(flags) == len(BOOLS)
    assert all(query.BOOLEAN_SPELLINGS in p["description"] for p in flags), flags
