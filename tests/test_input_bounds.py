"""Input at the edges of what numbers and datetimes can hold: a clear 4xx, never a 500.

- run_at and delay share one bound (chalicelib/timebounds.py), checked without
  overflow for any offset;
- NaN, Infinity and numbers too large for a float are not JSON: refused where
  JSON comes in, never stored, never written in a response.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.http import dumps
from chalicelib.clock import FakeClock
from chalicelib.errors import ValidationFailed
from chalicelib.ids import new_job_id
from chalicelib.jsonstrict import loads_strict
from chalicelib.models import JobQuery, NewJob
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import JobStore
from chalicelib.timebounds import MAX_DELAY_SECONDS
from tests.apikit import Api, installed, settings_for


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


def stored(store: JobStore) -> int:
    return len(store.list_jobs(JobQuery(limit=1000)).jobs)


def strict(body: bytes) -> Any:
    """What a strict JSON parser (a browser's, Go's, jq's) makes of a body."""
    return loads_strict(body)


# -- run_at and delay: one bound, no overflow ----------------------------------

EDGE_TIMES = [
    "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
    "0001-01-01T00:00:00+14:00",  # year 0 in UTC
    "9999-12-31T23:59:59+14:00",  # representable, but thousands of years ahead
    "9999-12-31T23:59:59.999999Z",
]


@pytest.mark.parametrize("run_at", EDGE_TIMES)
def test_run_at_at_the_datetime_limits_is_422_naming_the_field(
    api: Api, rt: Runtime, run_at: str
) -> None:
    reply = api.post("/enqueue", {"type": "echo", "run_at": run_at})
    assert reply.status == 422, reply.body
    error = reply.json["error"]
    assert error["code"] == "validation_error"
    assert "run_at" in json.dumps(error)
    assert stored(rt.store) == 0


def test_one_such_job_makes_its_batch_422_naming_its_index(api: Api, rt: Runtime) -> None:
    jobs: list[dict[str, Any]] = [{"type": "echo"}] * 2
    for run_at in EDGE_TIMES:
        reply = api.post("/enqueue", {"jobs": [*jobs, {"type": "echo", "run_at": run_at}]})
        assert reply.status == 422, reply.body
        [problem] = reply.json["error"]["details"]
        assert problem["index"] == 2
        assert "run_at" in json.dumps(problem)
    assert stored(rt.store) == 0


def test_run_at_and_delay_share_one_bound(svc: Service, clock: FakeClock) -> None:
    limit = clock.now() + timedelta(seconds=MAX_DELAY_SECONDS)
    ok = EnqueueRequest(type="echo", run_at=limit)
    assert svc.enqueue([ok], "t")[0].job.run_at == limit
    assert svc.enqueue([EnqueueRequest(type="echo", delay=MAX_DELAY_SECONDS)], "t")[0].created
    too_far = EnqueueRequest(type="echo", run_at=limit + timedelta(microseconds=1))
    with pytest.raises(ValidationFailed) as info:
        svc.enqueue([too_far], "t")
    assert info.value.details["field"] == "run_at"
    assert info.value.details["max_seconds"] == MAX_DELAY_SECONDS
    assert "366 days" in info.value.message
    with pytest.raises(ValueError, match="delay"):
        EnqueueRequest(type="echo", delay=MAX_DELAY_SECONDS + 0.5)
    with pytest.raises(ValidationFailed) as batch:
        svc.enqueue([ok, too_far], "t")
    assert [p["index"] for p in batch.value.details] == [1]
    assert stored(svc.store) == 2


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_non_finite_or_huge_delay_is_refused_by_name(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        EnqueueRequest(type="echo", delay=delay)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "echo", "delay": 1e300},
        {"type": "echo", "priority": 1e300},
        {"type": "echo", "max_attempts": 1e300},
        {"type": "echo", "priority": 10**400},
        {"type": "sleep", "payload": {"seconds": 1e300}},
    ],
)
def test_huge_numbers_in_fields_are_422(api: Api, rt: Runtime, body: dict[str, Any]) -> None:
    reply = api.post("/enqueue", body)
    assert reply.status == 422, reply.body
    assert stored(rt.store) == 0


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("written", ["9.3e18", "1e20", "5.0"])
def test_an_integral_float_in_a_payload_int_is_that_integer(
    api: Api, rt: Runtime, written: str, batch: bool
) -> None:
    """JSON has one number type: 1e20 in an int field is the integer 10**20, which
    written out in digits was taken. The check passed it, then the service's own
    reading (given the float) refused it: 422 "Unable to parse input string as an
    integer", at loc ["times"], not ["payload", "times"]."""
    job = f'{{"type": "fail", "payload": {{"times": {written}}}}}'
    reply = api.post("/enqueue", raw=(f'{{"jobs": [{job}]}}' if batch else job).encode())
    assert reply.status == 201, reply.body
    stored_job = rt.store.list_jobs(JobQuery(tenant=None, limit=10)).jobs[0]
    assert stored_job.payload == {
        "times": int(float(written)),
        "always": False,
        "message": "planned failure",
    }
    assert type(stored_job.payload["times"]) is int


@pytest.mark.parametrize("wait", ["nan", "inf", "-inf", "1e999", "Infinity"])
def test_status_wait_must_be_a_finite_number(api: Api, wait: str) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 60})
    reply = api.get(f"/status/{job_id}?wait={wait}")
    assert reply.status == 422, reply.body


@pytest.mark.parametrize("micros", [10**30, -(10**30), 2**63, -(2**63) - 1])
def test_a_cursor_past_any_time_is_400_not_500(api: Api, micros: int) -> None:
    api.enqueue({"type": "echo"})
    forged = base64.urlsafe_b64encode(f"{micros}|j_x".encode()).decode().rstrip("=")
    for path in ("/jobs", "/dlq"):
        reply = api.get(f"{path}?cursor={forged}")
        assert reply.status == 400, reply.body
        assert reply.error_code == "bad_request"


# -- NaN and Infinity are not JSON ---------------------------------------------

NON_FINITE_BODIES = [
    b'{"type": "echo", "payload": {"x": 1e999}}',
    b'{"type": "echo", "payload": {"x": -1e999}}',
    b'{"type": "echo", "payload": {"x": [1, {"y": 1E+400}]}}',
    b'{"type": "echo", "payload": {"x": NaN}}',
    b'{"type": "echo", "payload": {"x": Infinity}}',
    b'{"type": "echo", "payload": {"x": -Infinity}}',
    b'{"type": "echo", "delay": 1e999}',
    b'{"jobs": [{"type": "echo"}, {"type": "echo", "payload": {"x": 1e999}}]}',
]


@pytest.mark.parametrize("body", NON_FINITE_BODIES)
def test_non_finite_numbers_in_a_body_are_400(api: Api, rt: Runtime, body: bytes) -> None:
    reply = api.post("/enqueue", raw=body)
    assert reply.status == 400, reply.body
    assert reply.error_code == "bad_request"
    assert "finite" in reply.json["error"]["details"]["reason"]
    assert stored(rt.store) == 0


def test_non_finite_numbers_in_the_redrive_body_are_400(api: Api) -> None:
    assert api.post("/dlq/redrive", raw=b'{"limit": 1e999}').status == 400


def test_the_service_refuses_a_non_finite_payload_from_any_caller(svc: Service) -> None:
    for value in (float("inf"), float("nan"), [1.0, -float("inf")]):
        with pytest.raises(ValidationFailed) as info:
            svc.enqueue([EnqueueRequest(type="echo", payload={"x": value})], "t")
        assert "NaN or Infinity" in info.value.message
    assert stored(svc.store) == 0


def test_a_stored_infinity_is_served_as_strict_json(api: Api, rt: Runtime) -> None:
    # A row written before non-finite numbers were refused.
    job = NewJob(
        id=new_job_id(),
        type="echo",
        payload={"x": float("inf"), "y": [float("nan"), 1.5]},
        run_at=rt.store.clock.now() + timedelta(hours=1),
        tenant="tenant-a",
    )
    rt.store.add([job])
    status = api.get(f"/status/{job.id}")
    assert status.status == 200
    assert strict(status.body)["payload"] == {"x": None, "y": [None, 1.5]}
    listing = api.get("/jobs")
    assert listing.status == 200
    assert strict(listing.body)["jobs"][0]["payload"] == {"x": None, "y": [None, 1.5]}


def test_dumps_never_writes_nan_or_infinity() -> None:
    assert dumps({"a": float("inf"), "b": [float("-inf"), float("nan")]}) == (
        '{"a":null,"b":[null,null]}'
    )
    assert dumps({"a": 1.5}) == '{"a":1.5}'
    with pytest.raises(TypeError):  # other faults still surface
        dumps({"a": object()})


@pytest.mark.parametrize("text", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "[1E309]"])
def test_loads_strict_refuses_what_json_cannot_carry(text: str) -> None:
    with pytest.raises(json.JSONDecodeError, match="finite"):
        loads_strict(text)


def test_loads_strict_reads_ordinary_json() -> None:
    text = '{"a": [1, 2.5, -0.0, 1e308, 123456789012345678901234567890], "b": null}'
    assert loads_strict(text) == json.loads(text)
    assert loads_strict(b'{"k": "NaN"}') == {"k": "NaN"}
