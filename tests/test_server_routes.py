"""local/server.py's RouteTable answers every path exactly as chalice's RouteMatcher.

RouteTable is a faster copy of chalice's matcher (`spool serve` matches a route
per request): the same route, the same captured parameters (including chalice's
quirks), the same query parameters, and the same refusal for no match.
"""

from __future__ import annotations

from typing import Any

from chalice.local import RouteMatcher
from hypothesis import example, given, settings
from hypothesis import strategies as st

import app as spool_app
from local.server import RouteTable

APP_ROUTES = sorted(spool_app.app.routes)
# Templates that exercise the order and capture rules beside app.py's own.
EXTRA_ROUTES = ["/", "/a/{x}", "/a/b", "/a/{x}/c", "/a/b/{y}", "/{p}/b/c", "/~z/{q}", "/a/~"]
SEGMENTS = ["", "a", "b", "c", "~", "~z", "{x}", "status", "jobs", "dlq", "redrive", "cancel",
            "ui", "api", "static", "enqueue", "j_0f", "%3F", "%23", "a;b", ":", "é"]  # fmt: skip


def answer(matcher: RouteMatcher, url: str) -> Any:
    try:
        found = matcher.match_route(url)
    except ValueError as exc:
        return ("no route", str(exc))
    return (found.route, found.captured, found.query_params)


def urls() -> st.SearchStrategy[str]:
    path = st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=4), max_size=5).map(
        lambda parts: "/" + "/".join(parts)
    )
    tail = st.sampled_from(["", "/", "?", "?a=1", "?a=1&a=2&b", "?wait=5&attempts=true", "#f"])
    prefix = st.sampled_from(["", "/", "x:"])
    return st.tuples(prefix, path, tail).map(lambda t: t[0] + t[1] + t[2])


@settings(max_examples=600, deadline=None)
@given(url=urls(), extra=st.booleans())
@example(url="/\n", extra=True)  # urlparse drops tabs and line breaks: found by a CI run
@example(url="/status/j_0f\t", extra=False)
# A template starting with a capture (/{p}/b/c) is tried after the literal ones of the
# path's first segment (/jobs/{id}/cancel) fail: RouteTable's per-segment lists keep it.
@example(url="/jobs/b/c", extra=True)
@example(url="/ui/b/c", extra=True)
def test_route_table_matches_as_chalice_does(url: str, extra: bool) -> None:
    routes = APP_ROUTES + (EXTRA_ROUTES if extra else [])
    assert answer(RouteTable(routes), url) == answer(RouteMatcher(routes), url)


def test_known_paths() -> None:
    table = RouteTable(APP_ROUTES)
    assert table.match_route("/status/j_1").route == "/status/{id}"
    assert table.match_route("/status/j_1/").captured == {"id": "j_1"}
    found = table.match_route("/jobs?state=dead&state=queued&limit=")
    assert found.route == "/jobs"
    assert found.query_params == {"state": ["dead", "queued"], "limit": [""]}
    assert table.match_route("/dlq/redrive").route == "/dlq/redrive"
    assert table.match_route("/dlq/j_2/redrive").captured == {"id": "j_2"}


# One table for every example, as a server keeps one: paths that matched a template
# without captures are remembered, and a remembered answer must be the loop's.
_SHARED = {extra: RouteTable(APP_ROUTES + (EXTRA_ROUTES if extra else [])) for extra in (0, 1)}


@settings(max_examples=600, deadline=None)
@given(url=urls(), extra=st.booleans())
@example(url="/enqueue", extra=False)
@example(url="/enqueue/", extra=False)
@example(url="/a/b", extra=True)
def test_a_remembered_path_is_answered_as_chalice_does(url: str, extra: bool) -> None:
    routes = APP_ROUTES + (EXTRA_ROUTES if extra else [])
    table = _SHARED[int(extra)]
    expected = answer(RouteMatcher(routes), url)
    assert answer(table, url) == expected
    assert answer(table, url) == expected  # the second time from what it remembered


def test_a_remembered_answer_is_a_new_result_each_time() -> None:
    """What a match hands out is the caller's to change (the event holds its dicts)."""
    table = RouteTable(APP_ROUTES)
    first = table.match_route("/enqueue")
    first.captured["x"] = "y"
    first.query_params["q"] = ["1"]
    second = table.match_route("/enqueue")
    assert (second.route, second.captured, second.query_params) == ("/enqueue", {}, {})
    assert table._static == {"/enqueue": "/enqueue"}
    table.match_route("/status/j_1")  # a capture: not remembered
    table.match_route("/jobs?state=dead")  # a query: not remembered
    assert table._static == {"/enqueue": "/enqueue"}
