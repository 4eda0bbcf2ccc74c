"""The dashboard's JSON routes at their edges: actions that take no body refuse one,
and every answer, errors included, carries the page's headers and is never cached."""

from __future__ import annotations

import pytest

from chalicelib.ui.page import SECURITY_HEADERS
from tests.apikit import KEY_A, OPERATOR_KEY, Api


@pytest.mark.parametrize("action", ["cancel", "redrive"])
@pytest.mark.parametrize("raw", [b"not json", b'{"foo": 1}', b"[]", b"null", b"0"])
def test_an_action_that_takes_no_body_refuses_one_and_changes_nothing(
    api: Api, action: str, raw: bytes
) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 3600})
    if action == "redrive":
        assert api.post(f"/jobs/{job_id}/cancel").status == 200  # not dead: 409 below
    before = api.get(f"/status/{job_id}").json["state"]
    reply = api.post(f"/ui/api/jobs/{job_id}/{action}", raw=raw)
    if raw == b"not json":
        assert reply.status == 400 and reply.error_code == "bad_request"
    else:
        assert reply.status == 422 and "no body" in reply.json["error"]["message"]
    assert api.get(f"/status/{job_id}").json["state"] == before


@pytest.mark.parametrize("raw", [b"", b"{}", b" { } "])
def test_no_body_or_an_empty_object_is_what_cancel_takes(api: Api, raw: bytes) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 3600})
    reply = api.post(f"/ui/api/jobs/{job_id}/cancel", raw=raw)
    assert reply.status == 200 and reply.json["state"] == "cancelled"


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("GET", "/ui/api/overview", None, 401),
        ("GET", "/ui/api/jobs/j_" + "0" * 32, "tenant", 404),
        ("GET", "/ui/api/jobs?state=nope", "tenant", 422),
        ("POST", "/ui/api/dead/purge", "tenant", 400),
        ("GET", "/ui/api/overview", "operator", 403),
        ("GET", "/ui/static/nothing-here.js", None, 404),
    ],
)
def test_errors_on_the_dashboard_carry_its_headers_and_are_not_cached(
    api: Api, method: str, path: str, key: str | None, status: int
) -> None:
    sent = {"tenant": KEY_A, "operator": OPERATOR_KEY}.get(key or "")
    reply = api.call(method, path, raw=b"not json" if method == "POST" else None, key=sent)
    assert reply.status == status, reply.body
    for name, value in {**SECURITY_HEADERS, "Cache-Control": "no-store"}.items():
        assert reply.header(name) == value, name


def test_metrics_are_never_cached(api: Api) -> None:
    reply = api.get("/metrics", key=OPERATOR_KEY)
    assert reply.status == 200 and reply.header("Cache-Control") == "no-store"
