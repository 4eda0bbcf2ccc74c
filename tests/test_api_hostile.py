"""A hostile or careless client against the HTTP edge: what the earlier passes (query
strings, bodies of /enqueue, tenant isolation) did not reach. Through
chalice.test.Client, the path API Gateway + Lambda takes; `spool serve` runs the
same routes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chalice.test import Client

import app as spool_app
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import API_KEYS, KEY_A, Api, installed, settings_for
from tests.procs import guarded_env, spool_serve, stop


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, max_body_bytes=2048, demo_handlers=True)) as runtime:
        yield runtime


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    with Client(spool_app.app) as client:
        yield Api(client)


def _state(api: Api, job_id: str) -> str:
    return str(api.get(f"/status/{job_id}").json["state"])


def _dead(api: Api, rt: Runtime) -> str:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    handler = spool_app.app.handler_map["drain_due"]
    handler(scheduled_event(spool_app.app), context("drain_due"))
    assert _state(api, job_id) == "dead"
    return job_id


BODIES = [
    b"garbage",
    b'{"type": "echo", "payload": {}}',  # an enqueue sent to the wrong route
    b'{"reason": "no longer needed"}',  # an option the route does not have
    b"[]",
    b"null",
]


@pytest.mark.parametrize("raw", BODIES)
def test_cancel_with_a_body_it_does_not_take_is_refused_and_cancels_nothing(
    api: Api, raw: bytes
) -> None:
    """Was: POST /jobs/{id}/cancel never read its body, so anything (not JSON, a job
    meant for /enqueue) cancelled the job with 200; the dashboard's cancel refused it."""
    job_id = api.enqueue({"type": "echo", "delay": 60})
    reply = api.post(f"/jobs/{job_id}/cancel", raw=raw)
    assert reply.status in (400, 422), reply.body
    assert "body" in reply.json["error"]["message"]
    assert _state(api, job_id) == "queued"


@pytest.mark.parametrize("raw", BODIES)
def test_redrive_with_a_body_it_does_not_take_is_refused_and_moves_nothing(
    api: Api, rt: Runtime, raw: bytes
) -> None:
    job_id = _dead(api, rt)
    reply = api.post(f"/dlq/{job_id}/redrive", raw=raw)
    assert reply.status in (400, 422), reply.body
    assert "body" in reply.json["error"]["message"]
    assert _state(api, job_id) == "dead"


@pytest.mark.parametrize("raw", [b"", b"{}", b" { } \n"])
def test_cancel_and_redrive_take_no_body_or_an_empty_object(
    api: Api, rt: Runtime, raw: bytes
) -> None:
    waiting = api.enqueue({"type": "echo", "delay": 60})
    assert api.post(f"/jobs/{waiting}/cancel", raw=raw).status == 200
    dead = _dead(api, rt)
    assert api.post(f"/dlq/{dead}/redrive", raw=raw).status == 200
    assert (_state(api, waiting), _state(api, dead)) == ("cancelled", "queued")


def test_a_compressed_or_oversized_body_on_cancel_is_refused(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 60})
    gz = api.post(f"/jobs/{job_id}/cancel", raw=b"{}", headers={"Content-Encoding": "gzip"})
    assert gz.status == 400
    big = api.post(f"/jobs/{job_id}/cancel", raw=b"{}" + b" " * 4096)
    assert big.status == 413
    assert _state(api, job_id) == "queued"


LATIN1_READ_AS_UTF8 = '{"type": "echo", "payload": {"name": "CafÃ©"}}'.encode("latin-1")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=iso-8859-1",
        "application/json;charset=latin-1",
        'application/json; charset="windows-1252"',
        "text/plain; charset=utf-16",
        "application/json; charset=utf-8; charset=latin-1",
    ],
)
def test_a_body_in_a_declared_charset_other_than_utf8_is_not_misread(
    api: Api, rt: Runtime, content_type: str
) -> None:
    """Was: the charset was ignored and the body read as UTF-8, so Latin-1 text that
    happens to be valid UTF-8 ("CafÃ©" as bytes) was stored as other text ("Café"),
    201. JSON is UTF-8 (RFC 8259): a non-ASCII body declared otherwise is refused."""
    reply = api.post("/enqueue", raw=LATIN1_READ_AS_UTF8, headers={"Content-Type": content_type})
    assert reply.status == 400, reply.body
    assert "UTF-8" in reply.json["error"]["message"]
    assert reply.json["error"]["details"]["header"] == "Content-Type"
    assert api.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF8",
        'application/json; charset="utf-8"',
        "application/json; charset=",  # declares nothing
        "text/plain",  # any type: Spool reads every body as JSON
        "application/x-www-form-urlencoded",
    ],
)
def test_a_utf8_body_is_taken_under_any_content_type(api: Api, content_type: str) -> None:
    body = '{"type": "echo", "payload": {"name": "Café"}}'.encode()
    reply = api.post("/enqueue", raw=body, headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    assert api.get(f"/status/{reply.json['id']}").json["payload"] == {"name": "Café"}


def test_an_ascii_body_is_taken_whatever_charset_it_is_labelled(api: Api) -> None:
    """ASCII reads the same in UTF-8 and in every charset a client would name: no
    misreading is possible, so a client whose library labels it Latin-1 still works."""
    body = b'{"type": "echo", "payload": {"name": "Caf\\u00e9"}}'
    headers = {"Content-Type": "application/json; charset=ISO-8859-1"}
    reply = api.post("/enqueue", raw=body, headers=headers)
    assert reply.status == 201, reply.body
    assert api.get(f"/status/{reply.json['id']}").json["payload"] == {"name": "Café"}


QUERIED_ROUTES = [
    ("GET", "/jobs?nope=1"),
    ("GET", "/dlq?limit=0"),
    ("GET", "/status/j_00000000000000000000000000000000?wait=abc"),
    ("POST", "/enqueue?queue=other"),
    ("POST", "/jobs/j_00000000000000000000000000000000/cancel?x=1"),
    ("POST", "/dlq/redrive?queue=qa"),
    ("GET", "/openapi.json?x=1"),
    ("GET", "/ui/api/jobs?state=bogus"),
    ("GET", "/ui/api/overview?x=1&x=2"),
]


@pytest.mark.parametrize(("method", "path"), QUERIED_ROUTES)
@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_without_a_valid_key_a_bad_query_is_401_and_names_no_parameter(
    api: Api, method: str, path: str, key: str | None
) -> None:
    """Was: the query was read before the key, so an anonymous client got 422 naming
    the route's parameters ("it takes: cursor, limit, queue, state, type") instead of
    the 401 every other request without a valid key gets."""
    reply = api.call(method, path, key=key)
    assert reply.status == 401, reply.body
    assert reply.error_code == "unauthorized"
    assert "parameter" not in reply.body.decode()


@pytest.mark.parametrize(("method", "path"), QUERIED_ROUTES)
def test_with_a_valid_key_a_bad_query_is_still_refused_naming_it(
    api: Api, method: str, path: str
) -> None:
    reply = api.call(method, path)
    assert reply.status in (400, 422), reply.body
    assert "parameter" in reply.json["error"]["message"]


# -- the same over a socket, against a real `spool serve` ---------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("hostile")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_DEMO_HANDLERS="true",
    )
    fd = os.open(folder / "serve.log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        child = spool_serve("--threads", "4", env=env, stderr=fd)
    finally:
        os.close(fd)
    try:
        yield child.url
    finally:
        stop(child.proc)


def _send(url: str, method: str, path: str, key: str | None = KEY_A, **kw: Any) -> Any:
    headers = {**({"X-API-Key": key} if key else {}), **kw.pop("headers", {})}
    return requests.request(method, url + path, headers=headers, timeout=10, **kw)


def test_over_a_socket_hostile_bodies_and_queries_change_nothing(served: str) -> None:
    made = _send(served, "POST", "/enqueue", json={"type": "echo", "delay": 600})
    job_id = made.json()["id"]
    misrouted = _send(served, "POST", f"/jobs/{job_id}/cancel", data=b'{"type": "echo"}')
    assert misrouted.status_code == 422, misrouted.text
    latin1 = {"Content-Type": "application/json; charset=iso-8859-1"}
    misread = _send(served, "POST", "/enqueue", data=LATIN1_READ_AS_UTF8, headers=latin1)
    assert misread.status_code == 400, misread.text
    anonymous = _send(served, "GET", "/jobs?nope=1", key=None)
    assert anonymous.status_code == 401 and "parameter" not in anonymous.text
    unsupported = _send(served, "PUT", "/enqueue", data=b"{}")
    assert unsupported.status_code == 405
    assert unsupported.headers["X-Content-Type-Options"] == "nosniff"
    jobs = _send(served, "GET", "/jobs").json()["jobs"]
    assert [(j["id"], j["state"]) for j in jobs] == [(job_id, "queued")]


def test_keys_trusted_by_sign_in_throttling_are_digests_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: the keys that signed in from an address were kept as they are and a
    throttled client's credential was looked up among them with ==, which stops at
    the first differing character: the one comparison of a presented key that was not
    hmac.compare_digest of digests (auth.Keyring), and raw keys held in memory."""
    import hmac

    from chalicelib.api.throttle import FailedSignIns
    from chalicelib.limits import Rate

    gate = FailedSignIns(Rate(1, 3600), timer=lambda: 0.0)
    for n in range(3):
        gate.succeeded("10.0.0.1", f"secret-key-{n}")
    gate.failed("10.0.0.1")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("chalicelib.api.throttle.hmac.compare_digest", spy)
    assert gate.refusing("10.0.0.1", "secret-key-0") == 0.0
    assert len(calls) == 3  # every trusted entry, even after the match
    assert gate.refusing("10.0.0.1", "secret-key-9") > 0
    assert "secret-key" not in repr(vars(gate))


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/enqueue"), ("GET", "/enqueue"), ("DELETE", "/status/j_x"), ("TRACE", "/jobs")],
)
def test_a_method_a_route_lacks_is_405_with_the_api_s_own_headers(
    api: Api, method: str, path: str
) -> None:
    """Was: Chalice's own 405 came without Cache-Control: no-store and nosniff, which
    every other answer of the API carries (http.API_HEADERS)."""
    reply = api.call(method, path)
    assert reply.status == 405 and reply.error_code == "method_not_allowed"
    assert reply.header("Allow")
    assert reply.header("Cache-Control") == "no-store"
    assert reply.header("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("digits", [10, 12, 30])
def test_rfc_3339_takes_any_number_of_second_fraction_digits(
    api: Api, rt: Runtime, digits: int
) -> None:
    """Was: more than 9 digits after the seconds' point was 422 "run_at must be an RFC
    3339 date-time", which it is (time-secfrac = "." 1*DIGIT): the fraction is kept to
    the microsecond, as 7 to 9 digits already were. died_before reads the same way."""
    stamp = "2026-01-05T00:00:00." + "1234567890" * 3
    stamp = stamp[: len("2026-01-05T00:00:00.") + digits] + "Z"
    reply = api.post("/enqueue", {"type": "echo", "run_at": stamp})
    assert reply.status == 201, reply.body
    assert api.get(f"/status/{reply.json['id']}").status == 200
    redrive = api.post("/dlq/redrive", {"died_before": stamp})
    assert redrive.status == 200, redrive.body
    assert redrive.json["died_before"].startswith("2026-01-05T00:00:00.123456")
