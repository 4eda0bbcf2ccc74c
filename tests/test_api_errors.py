"""Every refusal the HTTP edge makes: its status, its shape, and that it wrote nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import StoreUnavailable
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, Api, installed, settings_for

AUTHED_ROUTES = [
    ("POST", "/enqueue"),
    ("GET", "/status/j_00000000000000000000000000000000"),
    ("GET", "/jobs"),
    ("POST", "/jobs/j_00000000000000000000000000000000/cancel"),
    ("GET", "/dlq"),
    ("POST", "/dlq/j_00000000000000000000000000000000/redrive"),
    ("POST", "/dlq/redrive"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, max_body_bytes=2048, max_batch=3, demo_handlers=True)
    with installed(settings) as runtime:
        yield runtime


def stored(rt: Runtime) -> int:
    return len(rt.store.list_jobs(JobQuery(limit=1000)).jobs)


def assert_error_shape(body: dict[str, object]) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


def test_malformed_json_is_400_and_writes_nothing(api: Api, rt: Runtime) -> None:
    for raw in (
        b"{bad",
        b'{"type": "echo",}',
        b"\xff\xfe",
        b'{"type": NaN}',
        b"[" * 2000,
        b'{"type": "echo", "payload": {"x": 1e999}}',
    ):
        reply = api.post("/enqueue", raw=raw)
        assert reply.status == 400, raw
        assert_error_shape(reply.json)
        assert reply.error_code == "bad_request"
    assert stored(rt) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "echo", "type": "fail"}',
        b'{"type": "echo", "payload": {"to": "a", "to": "b"}}',
        b'{"jobs": [{"type": "echo"}], "jobs": []}',
        b'{"jobs": [{"type": "echo", "queue": "a", "queue": "b"}]}',
    ],
)
def test_a_name_given_twice_in_one_object_is_400_naming_it(
    api: Api, rt: Runtime, raw: bytes
) -> None:
    """Parsers disagree on which of two equal names wins (Python: the last), so a
    proxy or audit log could read another job than the one stored: refused."""
    reply = api.post("/enqueue", raw=raw)
    assert reply.status == 400 and reply.error_code == "bad_request", reply.body
    assert "appears twice in one object" in reply.json["error"]["details"]["reason"]
    assert stored(rt) == 0
    # Equal names in different objects are no repeat.
    ok = api.post("/enqueue", raw=b'{"type": "echo", "payload": {"type": "x", "p": {"type": 1}}}')
    assert ok.status == 201


@pytest.mark.parametrize(
    "raw",
    [
        # One name spelled twice: first as a surrogate pair's UTF-8 bytes (CESU-8, not
        # UTF-8), then properly. json.loads(bytes) let the first through as a
        # surrogate pair and kept only the second member.
        b'{"type": "echo", "payload": {"\xed\xa0\x80\xed\xb0\x80": "first", '
        + "\U00010000".encode()
        + b'": "second"}}',
        '{"type": "echo"}'.encode("utf-16"),  # json.loads(bytes) guessed UTF-16
        '{"type": "echo"}'.encode("utf-32"),
        b'{"type": "echo", "payload": {"v": "\xff"}}',
        b'{"type": "echo", "payload": {"v": "\xc0\xaf"}}',  # an overlong '/'
    ],
)
def test_a_body_that_is_not_utf8_is_400_and_stores_nothing(
    api: Api, rt: Runtime, raw: bytes
) -> None:
    reply = api.post("/enqueue", raw=raw)
    assert reply.status == 400 and reply.error_code == "bad_request", reply.body
    assert reply.json["error"]["message"] == "request body is not UTF-8: send JSON encoded as UTF-8"
    assert stored(rt) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (["not", "an", "object"], "validation_error"),
        ("just a string", "validation_error"),
        ({"type": "no-such-type"}, "unknown_job_type"),
        ({"type": "sleep", "payload": {"seconds": -1}}, "validation_error"),
        ({"type": "sleep", "payload": {"seconds": "5"}}, "validation_error"),
        ({"type": "sleep", "payload": {"seconds": 1, "extra": True}}, "validation_error"),
        ({"type": "echo", "payload": "not an object"}, "validation_error"),
        ({"type": "echo", "priority": "5"}, "validation_error"),
        ({"type": "echo", "delay": 1, "run_at": "2031-01-01T00:00:00Z"}, "validation_error"),
        ({"type": "echo", "run_at": "2031-01-01T00:00:00"}, "validation_error"),
        ({"type": "echo", "colour": "blue"}, "validation_error"),
        ({"jobs": []}, "validation_error"),
        ({"jobs": [{"type": "echo"}], "extra": 1}, "validation_error"),
    ],
)
def test_invalid_jobs_are_422_and_write_nothing(
    api: Api, rt: Runtime, body: object, code: str
) -> None:
    reply = api.post("/enqueue", body)
    assert reply.status == 422, reply.body
    assert_error_shape(reply.json)
    assert reply.error_code == code
    assert stored(rt) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "echo", "queue": "a b"}, "queue"),
        ({"type": "echo", "queue": ""}, "queue"),
        ({"type": "bad type"}, "type"),
        ({"jobs": [{"type": "echo", "queue": "q/1"}]}, "queue"),
    ],
)
def test_a_name_no_job_can_have_is_refused_in_words(
    api: Api, rt: Runtime, body: dict[str, object], field: str
) -> None:
    """It said pydantic's "String should match pattern '^[A-Za-z0-9_.:-]{1,64}$'", and so
    did the Python client's exception and `spool enqueue`'s line that carried it."""
    reply = api.post("/enqueue", body)
    assert reply.status == 422, reply.body
    [detail] = reply.json["error"]["details"]
    if "jobs" in body:  # a batch: each bad job's index and its own details
        assert detail["index"] == 0
        [detail] = detail["details"]
    assert detail["loc"][-1] == field and detail["type"] == "string_pattern_mismatch"
    assert detail["msg"] == "a name is 1 to 64 letters, digits, '_', '.', ':' or '-'"
    assert stored(rt) == 0


@pytest.mark.parametrize("field", ["state", "attempts", "tenant", "id", "result", "created_at"])
def test_server_owned_fields_are_refused_by_name(api: Api, rt: Runtime, field: str) -> None:
    reply = api.post("/enqueue", {"type": "echo", field: "x"})
    assert reply.status == 422
    assert field in reply.json["error"]["message"]
    assert reply.json["error"]["details"] == {"fields": [field], "loc": [field]}
    assert stored(rt) == 0


def test_a_batch_with_one_bad_job_stores_none(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"jobs": [{"type": "echo"}, {"type": "nope"}, {"type": "echo"}]})
    assert reply.status == 422
    details = reply.json["error"]["details"]
    assert [d["index"] for d in details] == [1]
    assert stored(rt) == 0


def test_body_over_the_limit_is_413(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "echo", "payload": {"blob": "x" * 4096}})
    assert reply.status == 413 and reply.error_code == "payload_too_large"
    assert reply.json["error"]["details"]["limit"] == 2048
    assert stored(rt) == 0


def test_batch_over_the_limit_is_413(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"jobs": [{"type": "echo"}] * 4})
    assert reply.status == 413
    assert reply.json["error"]["details"] == {"limit": 3, "size": 4}
    assert stored(rt) == 0
    assert api.post("/enqueue", {"jobs": [{"type": "echo"}] * 3}).status == 201


@pytest.mark.parametrize(("method", "path"), AUTHED_ROUTES)
@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_no_or_wrong_key_is_401(
    api: Api, rt: Runtime, method: str, path: str, key: str | None
) -> None:
    reply = api.call(method, path, {"type": "echo"} if path == "/enqueue" else None, key=key)
    assert reply.status == 401
    assert reply.error_code == "unauthorized"
    assert reply.header("WWW-Authenticate") == 'ApiKey header="X-API-Key"'
    assert stored(rt) == 0


def test_unknown_id_and_another_tenants_id_answer_the_same_404(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 60})
    missing = "j_" + "0" * 32
    for method, template in [
        ("GET", "/status/{}"),
        ("POST", "/jobs/{}/cancel"),
        ("POST", "/dlq/{}/redrive"),
    ]:
        theirs = api.call(method, template.format(job_id), key=KEY_B)
        unknown = api.call(method, template.format(missing), key=KEY_B)
        assert theirs.status == unknown.status == 404
        assert theirs.body.replace(job_id.encode(), missing.encode()) == unknown.body
    assert api.get(f"/status/{job_id}").json["state"] == "queued"  # untouched


@pytest.mark.parametrize(
    "query",
    ["wait=21", "wait=-1", "wait=abc", "nope=1"],
)
def test_bad_status_query_is_422(api: Api, query: str) -> None:
    job_id = api.enqueue({"type": "echo"})
    assert api.get(f"/status/{job_id}?{query}").status == 422


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=x", "state=bogus", "queue=a%20b", "x=1"]
)
def test_bad_list_query_is_422(api: Api, query: str) -> None:
    reply = api.get(f"/jobs?{query}")
    assert reply.status == 422 and reply.error_code == "validation_error"
    assert api.get(f"/dlq?{query}").status == 422


def test_bad_cursor_is_400(api: Api) -> None:
    reply = api.get("/jobs?cursor=%%%not-a-cursor")
    assert reply.status == 400 and reply.error_code == "bad_request"
    assert "give back a next_cursor" in reply.json["error"]["message"]  # what to do instead


def _b64(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        "-1|j_a",  # a time before any job
        " 1|j_a",  # int() would skip the space
        "1_000|j_a",  # ...and read the underscore
        "\u0661\u0662|j_a",  # ...and Arabic-Indic digits
        "01|j_a",  # not how the server writes a number
        "1|j_a|b",  # a second separator
        "1|j_x' OR 1=1--",  # spaces and quotes: no job id has them
        "1|",  # no id
    ],
)
def test_a_cursor_the_server_did_not_write_is_400(api: Api, raw: str) -> None:
    cursor = _b64(raw.encode().decode("unicode_escape"))
    for route in ("/jobs", "/dlq"):
        reply = api.get(f"{route}?cursor={cursor}")
        assert reply.status == 400 and reply.error_code == "bad_request", (route, raw)


def test_a_cursor_the_server_wrote_is_taken(api: Api) -> None:
    ids = [api.enqueue({"type": "echo", "payload": {"n": n}}) for n in range(3)]
    cursor = api.get("/jobs?limit=1").json["next_cursor"]
    rest = api.get(f"/jobs?cursor={cursor}")
    assert [j["id"] for j in rest.json["jobs"]] == ids[1:]


def test_redrive_all_refuses_bad_filters(api: Api) -> None:
    assert api.post("/dlq/redrive", raw=b"{oops").status == 400
    assert api.post("/dlq/redrive", {"queue": "a b"}).status == 422
    assert api.post("/dlq/redrive", {"limit": 0}).status == 422


def test_store_unavailable_is_503_with_retry_after(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database is unreachable", retry_after=7)

    for name in ("get", "add", "list_jobs", "counters", "queue_totals"):
        monkeypatch.setattr(rt.store, name, down)
    for method, path in [
        ("GET", "/status/j_" + "0" * 32),
        ("POST", "/enqueue"),
        ("GET", "/jobs"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    ]:
        key = OPERATOR_KEY if path == "/metrics" else KEY_A
        reply = api.call(method, path, {"type": "echo"} if method == "POST" else None, key=key)
        assert reply.status == 503, path
        assert reply.header("Retry-After") == "7"
        assert reply.error_code == "store_unavailable"


def test_wrong_method_is_405_in_our_shape(api: Api) -> None:
    reply = api.call("DELETE", "/enqueue")
    assert reply.status == 405
    assert_error_shape(reply.json)
    assert reply.error_code == "method_not_allowed"
    assert reply.header("Allow") == "POST"


def test_unexpected_failure_is_a_500_that_reveals_nothing(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(rt.store, "get", broken)
    reply = api.get("/status/j_" + "0" * 32)
    assert reply.status == 500 and reply.error_code == "internal_error"
    assert b"secret" not in reply.body


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["echo", "sleep", "fail", "x"])},
            optional={
                "payload": st.dictionaries(
                    st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3
                ),
                "priority": st.integers(-2000, 2000),
                "delay": st.floats(-10, 1e9, allow_nan=False),
                "max_attempts": st.integers(-5, 200),
                "queue": st.text(max_size=70),
                # Any instant with any offset, up to the very ends of datetime's range.
                "run_at": st.builds(
                    lambda when, offset: when.replace(tzinfo=timezone(offset)).isoformat(),
                    st.datetimes() | st.sampled_from([datetime.min, datetime.max]),
                    st.timedeltas(
                        -timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59)
                    ),
                ),
                # Two keys, so repeats with other fields meet an existing job (409).
                "idempotency_key": st.sampled_from(["k1", "k2"]),
            },
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_no_input_answers_500(api: Api, body: bytes) -> None:
    reply = api.post("/enqueue", raw=body)
    assert reply.status in (200, 201, 400, 409, 413, 422), reply.body
    if reply.status >= 400:
        assert_error_shape(reply.json)


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_keys": "key-a-0123456789=tenant a"},  # a tenant name with a space
        {"api_keys": "same-key-0000000000=one,same-key-0000000000=two"},  # one key, two tenants
        {"extra": {"SPOOL_CACHE_RECHECK": "soon"}},  # a number that is not one
    ],
    ids=["bad-tenant", "duplicate-key", "bad-number"],
)
def test_a_malformed_setting_answers_503_naming_no_secret(
    tmp_path, overrides: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Every request would fail the same way: a 503 the operator can find in the log,
    never a 500 per request, and the body names neither the setting's value nor a key."""
    from chalice.test import Client

    import app as spool_app

    with installed(settings_for(tmp_path, **overrides)), Client(spool_app.app) as client:
        api = Api(client)
        for method, path in [
            ("GET", "/status/j_" + "0" * 32),
            ("POST", "/enqueue"),
            ("GET", "/health"),
        ]:
            reply = api.call(method, path, {"type": "echo"} if method == "POST" else None)
            assert reply.status == 503, (path, reply.body)
            assert reply.error_code == "misconfigured"
            assert b"same-key" not in reply.body and b"key-a" not in reply.body
    assert any("cannot start" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "path",
    ["/jobs?state=dead&state=queued", "/dlq?limit=1&limit=500", "/jobs?queue=a&queue=a"],
)
def test_a_query_parameter_given_twice_is_a_400_naming_it(api: Api, path: str) -> None:
    # Both values reach the API (chalice keeps them all); answering with the last one
    # would answer a question the client did not ask.
    reply = api.get(path)
    assert reply.status == 400, reply.body
    assert_error_shape(reply.json)
    assert "repeated" in reply.json["error"]["message"]


@pytest.mark.parametrize("raw", ["1_0", "%201", "%2B5", "1.0", "%D9%A3"])
def test_a_query_count_is_read_in_plain_digits(api: Api, raw: str) -> None:
    """`limit=1_0` listed ten jobs: query counts were read as Python's int() reads."""
    for route in ("/jobs", "/dlq"):
        reply = api.get(f"{route}?limit={raw}")
        assert reply.status == 422 and reply.error_code == "validation_error", (route, raw)
    assert api.get("/jobs?limit=10").status == 200


@pytest.mark.parametrize("raw", ["1_0", "%201", "%2B5", "1.0", "%D9%A3"])
def test_the_dashboard_reads_its_page_size_in_plain_digits_too(api: Api, raw: str) -> None:
    """`/ui/api/jobs?limit=1_0` listed ten jobs after GET /jobs had stopped reading it so:
    the dashboard's listing kept Python's int()."""
    reply = api.get(f"/ui/api/jobs?limit={raw}")
    assert reply.status == 422 and reply.error_code == "validation_error", (raw, reply.body)
    assert api.get("/ui/api/jobs?limit=10").status == 200


@pytest.mark.parametrize("raw", ["1_0", "%201", "%2B1", "1%C2%A0", ".5", "5.", "%D9%A3", "1e-400"])
def test_a_long_poll_wait_is_read_in_plain_digits(api: Api, raw: str) -> None:
    """`?wait=1_0` held the request 10 s (float() reads it so), as did `+1`, ` 1` and `1`
    with a no-break space after it; a wait too small for a float was read as 0."""
    job = api.enqueue({"type": "echo", "delay": 3600})
    reply = api.get(f"/status/{job}?wait={raw}")
    assert reply.status == 422 and reply.error_code == "validation_error", (raw, reply.body)
    assert reply.json["error"]["details"][0]["loc"] == ["wait"]


@pytest.mark.parametrize("raw", ["0", "0.01", "1e-05", "2E-2"])
def test_a_long_poll_wait_as_the_client_writes_it_is_taken(api: Api, raw: str) -> None:
    """The Python client sends f"{wait:g}": a short wait comes as 1e-05."""
    job = api.enqueue({"type": "echo", "delay": 3600})
    assert api.get(f"/status/{job}?wait={raw}").status == 200
