"""GET /status/{id}?attempts=true: the job with its attempt history, never from the cache."""

from __future__ import annotations

from chalicelib.api.schemas import JobView, JobWithAttempts
from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, Api


def run_due(rt: Runtime) -> None:
    worker = rt.worker(2)
    try:
        worker.drain()
    finally:
        worker.close()


def test_status_with_attempts_shows_why_the_job_died(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue(
        {"type": "fail", "payload": {"always": True, "message": "smtp said no"}, "max_attempts": 1}
    )
    run_due(rt)
    reply = api.get(f"/status/{job_id}?attempts=true")
    assert reply.status == 200 and reply.header("X-Cache") == "miss"
    shown = JobWithAttempts.model_validate(reply.json)
    assert shown.state == "dead" and shown.attempts == 1  # the count keeps its meaning
    [attempt] = shown.attempt_history
    assert (attempt.number, attempt.outcome, attempt.error_type) == (1, "dead", "RuntimeError")
    assert attempt.error == "smtp said no (attempt 1)"
    assert attempt.traceback is not None
    assert attempt.traceback.endswith("RuntimeError: smtp said no (attempt 1)\n")
    assert attempt.worker == rt.store.attempts(job_id)[0].worker  # type: ignore[index]
    assert attempt.seconds >= 0 and attempt.next_delay is None


def test_the_cache_never_answers_for_attempts_nor_keeps_them(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {"x": 1}})
    run_due(rt)
    first = api.get(f"/status/{job_id}")
    second = api.get(f"/status/{job_id}")
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("miss", "hit")
    JobView.model_validate(second.json)  # no history in the plain answer
    assert "attempt_history" not in second.json
    with_history = api.get(f"/status/{job_id}?attempts=true")
    assert with_history.header("X-Cache") == "miss"  # a cached body would lack them
    assert [a["outcome"] for a in with_history.json["attempt_history"]] == ["succeeded"]
    plain = api.get(f"/status/{job_id}?attempts=false")
    assert plain.header("X-Cache") == "hit" and "attempt_history" not in plain.json
    assert plain.body == second.body


def test_a_job_not_yet_run_has_an_empty_history(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {}, "delay": 3600})
    reply = api.get(f"/status/{job_id}?attempts=1")
    assert reply.status == 200 and reply.json["attempt_history"] == []
    assert reply.json["state"] == "queued"


def test_another_tenant_sees_neither_job_nor_attempts(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {}})
    run_due(rt)
    reply = api.get(f"/status/{job_id}?attempts=true", key=KEY_B)
    assert reply.status == 404 and reply.error_code == "not_found"


def test_a_bad_attempts_flag_is_a_422(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {}})
    reply = api.get(f"/status/{job_id}?attempts=maybe")
    assert reply.status == 422
    assert "attempts" in reply.body.decode()


def test_openapi_documents_the_flag_and_the_history(api: Api, rt: Runtime) -> None:
    doc = api.get("/openapi.json").json
    status = doc["paths"]["/status/{id}"]["get"]
    flag = next(p for p in status["parameters"] if p["name"] == "attempts")
    assert flag["schema"]["type"] == "boolean" and flag["required"] is False
    ok = status["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/JobWithAttempts"} in ok["anyOf"]
    history = doc["components"]["schemas"]["JobWithAttempts"]["properties"]["attempt_history"]
    assert history["items"] == {"$ref": "#/components/schemas/AttemptView"}
