"""Every route through chalice.test.Client: the path API Gateway + Lambda takes."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.api.schemas import (
    BatchEnqueueResult,
    EnqueueResult,
    Health,
    JobList,
    JobView,
    RedriveAllResult,
)
from chalicelib.jsonstrict import MAX_NESTING
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, Api, installed, settings_for
from tests.handed_jobs import count_handed


def drain() -> dict[str, int]:
    handler = spool_app.app.handler_map["drain_due"]
    result: dict[str, int] = handler(scheduled_event(spool_app.app), context("drain_due"))
    return result


def test_enqueue_one_answers_201_with_id_state_and_status_url(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "echo", "payload": {"x": 1}})
    assert reply.status == 201
    result = EnqueueResult.model_validate(reply.json)
    assert result.state == "queued" and result.created
    assert result.status_url == f"/status/{result.id}"
    assert reply.header("Location") == result.status_url
    stored = rt.store.get(result.id)
    assert stored is not None and stored.payload == {"x": 1} and stored.tenant == "tenant-a"


def test_seen_idempotency_key_answers_200_with_the_existing_job(api: Api, rt: Runtime) -> None:
    job = {"type": "echo", "payload": {"x": 1}, "idempotency_key": "order-7"}
    first = api.post("/enqueue", job)
    again = api.post("/enqueue", job)
    assert (first.status, again.status) == (201, 200)
    assert again.json["id"] == first.json["id"] and again.json["created"] is False
    assert len(rt.store.list_jobs(JobQuery()).jobs) == 1


def test_idempotency_keys_are_per_tenant(api: Api) -> None:
    job = {"type": "echo", "idempotency_key": "same"}
    a = api.post("/enqueue", job)
    b = api.post("/enqueue", job, key=KEY_B)
    assert (a.status, b.status) == (201, 201)
    assert a.json["id"] != b.json["id"]


def test_batch_is_stored_whole_with_per_job_results(api: Api, rt: Runtime) -> None:
    api.post("/enqueue", {"type": "echo", "idempotency_key": "k1"})
    reply = api.post(
        "/enqueue",
        {
            "jobs": [
                {"type": "echo", "idempotency_key": "k1"},
                {"type": "echo", "payload": {"n": 2}},
            ]
        },
    )
    assert reply.status == 201
    results = BatchEnqueueResult.model_validate(reply.json).jobs
    assert [r.created for r in results] == [False, True]
    again = api.post("/enqueue", {"jobs": [{"type": "echo", "idempotency_key": "k1"}]})
    assert again.status == 200 and again.json["jobs"][0]["created"] is False


def test_status_reports_the_job_and_a_cache_miss_while_waiting(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {"a": "b"}})
    reply = api.get(f"/status/{job_id}")
    assert reply.status == 200 and reply.header("X-Cache") == "miss"
    view = JobView.model_validate(reply.json)
    assert view.state == "queued" and view.attempts == 0 and view.payload == {"a": "b"}


def test_status_wait_holds_until_the_job_finishes(api: Api, monkeypatch) -> None:
    """It answers when the job finishes, not when ?wait runs out. The route's clock is
    faked: each nap moves it on, and the job finishes during the third nap."""
    import chalicelib.api.routes as routes_module

    job_id = api.enqueue({"type": "echo", "payload": {"v": 42}})
    naps: list[float] = []

    class RouteTime:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            naps.append(seconds)
            self.now += seconds
            if len(naps) == 3:
                drain()

        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

    monkeypatch.setattr(routes_module, "time", RouteTime())
    reply = api.get(f"/status/{job_id}?wait=10")
    assert reply.status == 200
    assert reply.json["state"] == "succeeded" and reply.json["result"] == {"v": 42}
    assert len(naps) == 3  # it waited, and answered at its first look after the job finished
    assert sum(naps) < 10  # on completion, not at the limit


def test_status_wait_gives_up_after_n_seconds_with_the_current_state(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 3600})
    reply = api.get(f"/status/{job_id}?wait=0.2")
    assert reply.status == 200 and reply.json["state"] == "queued"


def test_list_jobs_filters_and_pages(api: Api) -> None:
    ids = [api.enqueue({"type": "echo", "queue": "q1"}) for _ in range(3)]
    api.enqueue({"type": "sleep", "payload": {"seconds": 0}, "queue": "q2"})
    page1 = api.get("/jobs?queue=q1&limit=2")
    assert page1.status == 200
    first = JobList.model_validate(page1.json)
    assert [j.id for j in first.jobs] == ids[:2] and first.next_cursor
    page2 = JobList.model_validate(
        api.get(f"/jobs?queue=q1&limit=2&cursor={first.next_cursor}").json
    )
    assert [j.id for j in page2.jobs] == ids[2:] and page2.next_cursor is None
    by_type = api.get("/jobs?type=sleep").json["jobs"]
    assert [j["queue"] for j in by_type] == ["q2"]
    assert api.get("/jobs?state=succeeded").json["jobs"] == []


def test_cancel_a_waiting_job(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 60})
    reply = api.post(f"/jobs/{job_id}/cancel")
    assert reply.status == 200 and reply.json["state"] == "cancelled"
    assert api.get(f"/status/{job_id}").json["state"] == "cancelled"


def test_cancel_a_finished_job_is_409(api: Api) -> None:
    job_id = api.enqueue({"type": "echo"})
    drain()
    reply = api.post(f"/jobs/{job_id}/cancel")
    assert reply.status == 409 and reply.error_code == "conflict"


def test_cancel_a_running_job_is_409(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo"})
    assert [j.id for j in rt.store.claim(1, 60)] == [job_id]
    reply = api.post(f"/jobs/{job_id}/cancel")
    assert reply.status == 409
    assert api.get(f"/status/{job_id}").json["state"] == "running"


def _dead_job(api: Api, **extra: object) -> str:
    return api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1, **extra})


def test_dlq_lists_dead_jobs_and_redrive_requeues_one(api: Api) -> None:
    dead = _dead_job(api)
    api.enqueue({"type": "echo"})
    drain()
    listed = JobList.model_validate(api.get("/dlq").json)
    assert [j.id for j in listed.jobs] == [dead]
    assert listed.jobs[0].last_error and "planned failure" in listed.jobs[0].last_error
    reply = api.post(f"/dlq/{dead}/redrive")
    assert reply.status == 200 and reply.json["state"] == "queued" and reply.json["attempts"] == 0
    assert api.get("/dlq").json["jobs"] == []
    again = api.post(f"/dlq/{dead}/redrive")
    assert again.status == 409


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type": "echo", "payload": {"n": ' + b"7" * 5000 + b"}}", "more than 4300 digits"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    ],
)
def test_a_body_python_cannot_read_is_told_why_in_json_terms(
    api: Api, raw: bytes, reason: str
) -> None:
    reply = api.post("/enqueue", raw=raw)
    assert reply.status == 400 and reply.error_code == "bad_request"
    said = reply.json["error"]["details"]["reason"]
    assert reason in said and "sys." not in said


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"text": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"deep": ' + b"[" * 400 + b"]" * 400 + b"}", "nested too deeply"),
    ],
)
@pytest.mark.parametrize("batch", [False, True])
def test_json_the_job_model_cannot_read_is_refused_in_words_about_the_request(
    api: Api, payload: bytes, reason: str, batch: bool
) -> None:
    job = b'{"type": "echo", "payload": ' + payload + b"}"
    reply = api.post("/enqueue", raw=b'{"jobs": [' + job + b"]}" if batch else job)
    assert reply.status == 422
    error = reply.json["error"]
    if batch:  # the batch's summary, then each job's problem
        [error] = error["details"]
    assert reason in error["message"] and "column" not in error["message"]
    # A surrogate is found down to its string (tests/test_chaos_s55g_surrogate_place.py),
    # nesting down to the array past the limit (tests/test_attack_s56j_refusal_places.py).
    depth = ["payload", "deep", *[0] * (MAX_NESTING - 2)]
    where = ["payload", "text"] if "surrogate" in reason else depth
    assert error["details"]["loc"] == (["jobs", 0] if batch else []) + where
    assert api.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
@pytest.mark.parametrize(
    ("path", "compress"), [("/enqueue", True), ("/enqueue", False), ("/dlq/redrive", False)]
)
def test_a_compressed_body_is_refused_and_says_send_it_plain(
    api: Api, encoding: str, path: str, compress: bool
) -> None:
    import gzip

    plain = json.dumps({"type": "echo", "payload": {"n": 1}}).encode()
    body = gzip.compress(plain) if compress else (plain if path == "/enqueue" else b"{}")
    reply = api.post(path, raw=body, headers={"Content-Encoding": encoding})
    assert reply.status == 400 and reply.error_code == "bad_request"
    assert "Content-Encoding" in reply.json["error"]["message"]
    assert "uncompressed" in reply.json["error"]["message"]
    assert api.get("/jobs").json["jobs"] == []
    plain_reply = api.post("/enqueue", raw=plain, headers={"Content-Encoding": "identity"})
    assert plain_reply.status == 201


@pytest.mark.parametrize(
    "raw",
    [b'{"limit": true}', b'{"limit": "5"}', b'{"limit": 5.5}', b"null", b"[]", b'"all"'],
)
def test_redrive_all_takes_its_filters_strictly(api: Api, raw: bytes) -> None:
    """A bulk action reads no true, "5" or null body as a filter, and moves nothing."""
    dead = _dead_job(api)
    drain()
    reply = api.post("/dlq/redrive", raw=raw)
    assert reply.status == 422 and reply.error_code == "validation_error"
    assert api.get(f"/status/{dead}").json["state"] == "dead"
    assert api.post("/dlq/redrive", raw=b'{"limit": 1.0}').json["ids"] == [dead]  # an integer


def test_redrive_all_with_and_without_filters(api: Api) -> None:
    a = _dead_job(api, queue="qa")
    b = _dead_job(api, queue="qb")
    drain()
    only_a = api.post("/dlq/redrive", {"queue": "qa"})
    assert only_a.status == 200
    assert RedriveAllResult.model_validate(only_a.json).ids == [a]
    rest = api.post("/dlq/redrive")  # no body: everything
    assert (rest.json["redriven"], rest.json["ids"]) == (1, [b])


def test_redrive_all_reads_and_redrives_whole_jobs_a_few_at_a_time(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: POST /dlq/redrive listed dead jobs 500 at a time and redrove each page in
    one store call that handed every job back whole, then kept them all (up to 1000)
    for an answer of ids. A job may carry a 256 KiB payload: `spool serve`'s RSS went
    from 245 to 690 MB on one redrive of 379 such jobs. Now no store call hands back
    more than service.REDRIVE_STEP jobs; the answer is the same."""
    from chalicelib import service

    step = service.REDRIVE_STEP
    dead = [_dead_job(api) for _ in range(step * 2 + 3)]
    drain()
    handed = count_handed(monkeypatch, rt.store)
    reply = api.post("/dlq/redrive")
    assert reply.status == 200, reply.body
    assert sorted(reply.json["ids"]) == sorted(dead) and reply.json["redriven"] == len(dead)
    assert max(handed) <= step, handed


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/dlq/redrive?queue=qa", None),
        ("/ui/api/dead/purge?queue=qa", {"all": True}),
        ("/ui/api/dead/redrive?queue=qa", {"all": True}),
    ],
)
def test_a_bulk_action_refuses_filters_in_its_query(api: Api, path: str, body: Any) -> None:
    """Was: the query was never read, so `?queue=qa` (as GET /dlq takes it) was dropped
    and the action reached every queue of the tenant: a purge deleted them all."""
    a = _dead_job(api, queue="qa")
    b = _dead_job(api, queue="qb")
    drain()
    reply = api.post(path, body)
    assert reply.status == 422 and reply.error_code == "validation_error"
    assert "query" in reply.json["error"]["message"]
    assert [api.get(f"/status/{j}").json["state"] for j in (a, b)] == ["dead", "dead"]


def test_an_enqueue_with_a_query_stores_nothing(api: Api) -> None:
    reply = api.post("/enqueue?queue=other", {"type": "echo", "idempotency_key": "q-1"})
    assert reply.status == 422
    again = api.post("/enqueue", {"type": "echo", "idempotency_key": "q-1"})
    assert again.status == 201 and again.json["created"] is True


def test_health_is_public(api: Api) -> None:
    reply = api.get("/health", key=None)
    assert reply.status == 200 and Health.model_validate(reply.json).status == "ok"


def test_metrics_and_openapi_need_a_key(api: Api) -> None:
    assert api.get("/metrics", key=None).status == 401
    assert api.get("/openapi.json", key=None).status == 401
    assert api.get("/metrics").status == 403  # a tenant's key is not an operator key
    metrics = api.get("/metrics", key=OPERATOR_KEY)
    assert metrics.status == 200 and b"spool_jobs_enqueued_total" in metrics.body
    assert (metrics.header("Content-Type") or "").startswith("text/plain; version=0.0.4")
    assert api.get("/openapi.json").json["openapi"].startswith("3.")


def test_metrics_public_when_configured(tmp_path) -> None:
    with (
        installed(settings_for(tmp_path, metrics_public=True)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        assert Api(client).get("/metrics", key=None).status == 200


def _gateway_event(
    path: str = "/enqueue",
    context_path: str | None = None,
    body: str | None = '{"type": "echo"}',
    base64: bool = False,
    multi: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    headers = {"x-api-key": "key-a-0123456789", "content-type": "application/json"}
    return {
        "resource": "/enqueue",
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": multi or {k: [v] for k, v in headers.items()},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/enqueue",
            "httpMethod": "POST",
            "path": context_path or path,
            "stage": "api",
        },
        "body": body,
        "isBase64Encoded": base64,
    }


@pytest.mark.parametrize(
    "form",
    ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dt%H:%M:%S.123456789z", "%Y-%m-%dT%H:%M:%S-00:00"],
)
def test_a_run_at_in_rfc_3339_is_taken_over_http(api: Api, rt: Runtime, form: str) -> None:
    """The strict check of the API took a run_at that a "before" validator had left a
    string for no date-time at all: every run_at was refused with 422."""
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    reply = api.post("/enqueue", {"type": "echo", "run_at": when.strftime(form)})
    assert reply.status == 201, reply.body
    job = rt.store.get(reply.json["id"])
    assert job is not None
    assert job.run_at == when + (timedelta(microseconds=123456) if ".123" in form else timedelta())


@pytest.mark.parametrize("form", ["%Y-%m-%dT23:59:60Z", "%Y-02-30T00:00:00Z"])
def test_a_run_at_that_never_happens_is_422(api: Api, rt: Runtime, form: str) -> None:
    given = (datetime.now(UTC) + timedelta(days=30)).strftime(form)
    reply = api.post("/enqueue", {"type": "echo", "run_at": given})
    assert b"run_at is not a date-time that exists" in reply.body
    assert reply.status == 422, reply.body
    assert sum(rt.store.counts().values()) == 0


def test_status_url_carries_the_api_gateway_stage(api: Api) -> None:
    # On execute-api URLs the path starts with the stage; links must include it.
    response = spool_app.app(_gateway_event(context_path="/api/enqueue"), context("api_handler"))
    assert response["statusCode"] == 201
    assert json.loads(response["body"])["status_url"].startswith("/api/status/j_")


def test_links_carry_a_custom_domain_s_base_path(api: Api) -> None:
    """Behind a custom domain's base path mapping (/v1 -> stage api) the client's URL
    starts with /v1, not the stage: links and Location must too."""
    response = spool_app.app(_gateway_event(context_path="/v1/enqueue"), context("api_handler"))
    assert response["statusCode"] == 201
    assert json.loads(response["body"])["status_url"].startswith("/v1/status/j_")
    assert response["headers"]["Location"].startswith("/v1/status/j_")
    # No prefix when the client's path is the route's own (spool serve, chalice local).
    plain = spool_app.app(_gateway_event(), context("api_handler"))
    assert json.loads(plain["body"])["status_url"].startswith("/status/j_")


@pytest.mark.parametrize(
    "prefix",
    ["//evil.example", "/\\evil.example", "/a b", "/v1\r\nSet-Cookie: x=1", '/x"y', "/v1//v2"],
)
def test_a_base_path_no_mapping_could_have_is_not_echoed_into_links(api: Api, prefix: str) -> None:
    """Was: whatever the event's requestContext.path held before the route's path went
    into status_url and Location as sent: "//evil.example" made a link to another host
    (a browser reads "/\\evil.example" the same way), a space or a line break an
    invalid header value. A stage or base path mapping is letters, digits and
    $-_.+!*'() in non-empty segments; anything else links from the root."""
    event = _gateway_event(context_path=f"{prefix}/enqueue")
    response = spool_app.app(event, context("api_handler"))
    assert response["statusCode"] == 201, response["body"]
    assert json.loads(response["body"])["status_url"].startswith("/status/j_")
    assert response["headers"]["Location"].startswith("/status/j_")


@pytest.mark.parametrize("body", ["abc", "!!!not base64***", "\u00e9"])
def test_a_body_marked_base64_that_is_not_is_400_not_500(api: Api, body: str) -> None:
    event = _gateway_event(body=body.encode().decode("unicode_escape"), base64=True)
    response = spool_app.app(event, context("api_handler"))
    assert response["statusCode"] == 400, response["body"]
    assert json.loads(response["body"])["error"]["code"] == "bad_request"
    good = _gateway_event(body=base64.b64encode(b'{"type": "echo"}').decode(), base64=True)
    assert spool_app.app(good, context("api_handler"))["statusCode"] == 201


def _event(method: str, resource: str, path: str, **fields: Any) -> dict[str, Any]:
    """An API Gateway proxy event as the Lambda runtime hands it over: parsed from JSON
    text, so a "\\ud800" escape arrives as a lone surrogate no UTF-8 can spell."""
    event = {
        **_gateway_event(path=path, body=None),
        "resource": resource,
        "httpMethod": method,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": path},
        **fields,
    }
    parsed: dict[str, Any] = json.loads(json.dumps(event))
    return parsed


@pytest.mark.parametrize(
    ("method", "resource"),
    [
        ("GET", "/status/{id}"),
        ("POST", "/jobs/{id}/cancel"),
        ("POST", "/dlq/{id}/redrive"),
        ("GET", "/ui/api/jobs/{id}"),
        ("POST", "/ui/api/jobs/{id}/cancel"),
    ],
)
def test_a_path_id_holding_a_lone_surrogate_is_404_not_500(
    api: Api, method: str, resource: str
) -> None:
    path = resource.replace("{id}", "j_\ud800")
    event = _event(method, resource, path, pathParameters={"id": "j_\ud800"})
    response = spool_app.app(event, context("api_handler"))
    assert response["statusCode"] == 404, response["body"]
    assert json.loads(response["body"])["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("resource", "query"),
    [
        ("/jobs", {"queue": "\ud800"}),
        ("/jobs", {"\udfff": "x"}),
        ("/ui/api/jobs", {"find": "key-\ud800"}),
        ("/dlq", {"type": "\ud800"}),
    ],
)
def test_a_query_holding_a_lone_surrogate_is_400_not_500(
    api: Api, resource: str, query: dict[str, str]
) -> None:
    event = _event(
        "GET",
        resource,
        resource,
        queryStringParameters=query,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()},
    )
    response = spool_app.app(event, context("api_handler"))
    assert response["statusCode"] == 400, response["body"]
    [name] = query
    # The name escaped, with U+FFFD for a lone surrogate, as every edge can show it
    # (API Gateway hands on U+FFFD for bytes `spool serve` reads as a surrogate).
    shown = name.replace("\udfff", "\ufffd").encode("ascii", "backslashreplace").decode()
    assert json.loads(response["body"])["error"]["message"] == (
        f"query parameter {shown!r} is not UTF-8: percent-encode UTF-8 bytes"
    )


def test_a_text_body_holding_a_lone_surrogate_is_400_saying_so(api: Api, rt: Runtime) -> None:
    event = _event(
        "POST", "/enqueue", "/enqueue", body='{"type": "echo", "payload": {"a": "\ud800"}}'
    )
    response = spool_app.app(event, context("api_handler"))
    assert response["statusCode"] == 400, response["body"]
    assert json.loads(response["body"])["error"]["message"] == (
        "request body is not UTF-8: send JSON encoded as UTF-8"
    )


def test_an_api_key_header_given_twice_with_different_keys_is_400(api: Api) -> None:
    """API Gateway keeps the last of repeated headers; a proxy that reads the first
    would see another tenant than Spool: refused, as repeated query parameters are."""
    multi = {"X-API-Key": ["key-a-0123456789"], "x-api-key": ["key-b-9876543210"]}
    response = spool_app.app(_gateway_event(multi=multi), context("api_handler"))
    assert response["statusCode"] == 400, response["body"]
    assert json.loads(response["body"])["error"]["details"] == {"header": "x-api-key"}
    same = {"X-API-Key": ["key-a-0123456789", "key-a-0123456789"]}
    assert spool_app.app(_gateway_event(multi=same), context("api_handler"))["statusCode"] == 201


def test_importing_app_loads_no_engine_code() -> None:
    """Cold starts pay only for chalice: the engine loads on the first request."""
    import subprocess
    import sys

    probe = (
        "import sys, app; print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'chalicelib', 'pydantic', 'prometheus_client', 'boto3', 'cachetools', 'sqlite3'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_no_get_route_minds_a_content_type_it_has_no_body_for(api: Api, content_type: str) -> None:
    """A probe or client that sends a default Content-Type on every request got 415 on
    every GET, /health and /metrics included: a healthy server looked down."""
    job = api.enqueue({"type": "echo", "payload": {}})
    for route, entry in spool_app.app.routes.items():
        if "GET" not in entry:
            continue
        path = route.replace("{id}", job).replace("{name}", "app.js")
        key = OPERATOR_KEY if route == "/metrics" else KEY_A
        reply = api.get(path, key=key, headers={"Content-Type": content_type})
        assert reply.status != 415, (route, reply.body)
        assert reply.status < 400, (route, reply.status, reply.body)
