"""A hostile or careless client against the HTTP edge: what the earlier passes (query
strings, bodies of /enqueue, tenant isolation) did not reach. Through
chalice.test.Client, the path API Gateway + Lambda takes; `spool serve` runs the
same routes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import Api, installed, settings_for


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
