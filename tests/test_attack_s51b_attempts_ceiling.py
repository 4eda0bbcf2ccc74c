"""How many attempts one enqueue may buy (stop 51, helper b).

`max_attempts` up to 100 let any client make one job take 100 attempts of worker
time, however little the handler's author meant a job of that type to retry. Now an
operator's ceiling (SPOOL_MAX_ATTEMPTS, 25 by default) bounds what a request may ask
for, above the handler's own default only; past it the answer is a 422 that names
the ceiling and the setting, on every way a job comes in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.service import DEFAULT_ATTEMPTS_CEILING
from local import cli
from spool_client import Client, JobSpec, ValidationFailed
from tests.apikit import KEY_A, Api, installed, settings_for
from tests.served import served


def _api(tmp_path: Path, **extra: str) -> tuple[object, Api]:
    from chalice.test import Client as ChaliceClient

    import app as spool_app

    context = installed(settings_for(tmp_path, extra=extra))
    context.__enter__()
    return context, Api(ChaliceClient(spool_app.app, stage_name="local"))


@pytest.fixture
def api(tmp_path: Path) -> object:
    context, api = _api(tmp_path, SPOOL_MAX_ATTEMPTS="4")
    yield api
    context.__exit__(None, None, None)  # type: ignore[attr-defined]


def _refusal_names_the_ceiling(error: dict[str, object], ceiling: int) -> None:
    assert f"at most {ceiling}" in str(error["message"])
    assert "SPOOL_MAX_ATTEMPTS" in str(error["message"])


def test_the_default_ceiling_is_well_below_what_the_schema_allowed() -> None:
    assert DEFAULT_ATTEMPTS_CEILING == 25


@pytest.mark.parametrize("asked", [5, 26, 100, 101, 10**30])
def test_one_enqueue_over_the_ceiling_is_422_naming_it(api: Api, asked: int) -> None:
    reply = api.post("/enqueue", {"type": "echo", "max_attempts": asked})
    assert reply.status == 422, reply.body
    _refusal_names_the_ceiling(reply.json["error"], 4)
    assert reply.json["error"]["details"]["max"] == 4


def test_up_to_the_ceiling_is_taken(api: Api) -> None:
    reply = api.post("/enqueue", {"type": "echo", "max_attempts": 4})
    assert reply.status == 201, reply.body
    assert api.get(f"/status/{reply.json['id']}").json["max_attempts"] == 4


def test_a_handler_s_own_default_above_the_ceiling_may_still_be_asked_for(api: Api) -> None:
    """`fail` retries 5 times by its author's choice: a client may ask for that many,
    not one more."""
    assert api.post("/enqueue", {"type": "fail", "max_attempts": 5}).status == 201
    reply = api.post("/enqueue", {"type": "fail", "max_attempts": 6})
    assert reply.status == 422
    _refusal_names_the_ceiling(reply.json["error"], 5)


def test_a_batch_with_one_job_over_the_ceiling_stores_none(api: Api) -> None:
    jobs = [{"type": "echo"}, {"type": "echo", "max_attempts": 50}]
    reply = api.post("/enqueue", {"jobs": jobs})
    assert reply.status == 422
    (problem,) = reply.json["error"]["details"]
    assert problem["index"] == 1
    _refusal_names_the_ceiling(problem, 4)
    assert api.get("/jobs").json["jobs"] == []


def test_the_python_client_over_a_real_socket_gets_the_ceiling(tmp_path: Path) -> None:
    with (
        served(tmp_path, extra={"SPOOL_MAX_ATTEMPTS": "3"}) as server,
        Client(f"http://127.0.0.1:{server.port}", KEY_A) as client,
    ):
        with pytest.raises(ValidationFailed) as one:
            client.enqueue("echo", {}, max_attempts=4)
        assert "at most 3" in one.value.message
        with pytest.raises(ValidationFailed):
            client.enqueue_many([JobSpec("echo"), JobSpec("echo", max_attempts=99)])
        assert client.enqueue("echo", {}, max_attempts=3).id


def test_the_openapi_document_says_each_type_s_bound(api: Api) -> None:
    variants = api.get("/openapi.json").json["components"]["schemas"]["EnqueueJob"]["oneOf"]
    bounds = {
        v["title"]: next(b.get("maximum") for b in v["properties"]["max_attempts"]["anyOf"])
        for v in variants
        if v["title"] in ("Enqueue echo", "Enqueue fail")
    }
    assert bounds == {"Enqueue echo": 4, "Enqueue fail": 5}


def test_the_cli_enqueue_and_schedules_keep_the_ceiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/spool.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    monkeypatch.setenv("SPOOL_MAX_ATTEMPTS", "2")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_SCHEDULES"):
        monkeypatch.delenv(name, raising=False)
    # echo's own default is 3: that many may be asked for, not 4.
    assert cli.main(["enqueue", "echo", "--max-attempts", "4"]) != 0
    err = capsys.readouterr().err
    assert "at most 3" in err and "SPOOL_MAX_ATTEMPTS is 2" in err
    assert cli.main(["enqueue", "echo", "--max-attempts", "3", "--json"]) == 0
    capsys.readouterr()
    schedule = {"name": "n", "type": "echo", "every": "1h", "max_attempts": 4}
    monkeypatch.setenv("SPOOL_SCHEDULES", json.dumps([schedule]))
    assert cli.main(["schedules"]) != 0
    err = capsys.readouterr().err
    assert "at most 3" in err and "SPOOL_MAX_ATTEMPTS is 2" in err


@pytest.mark.parametrize("value", ["0", "101", "-1", "lots", "2.5"])
def test_a_ceiling_out_of_range_is_a_misconfiguration_not_a_silent_default(
    tmp_path: Path, value: str
) -> None:
    context, api = _api(tmp_path, SPOOL_MAX_ATTEMPTS=value)
    try:
        reply = api.post("/enqueue", {"type": "echo", "max_attempts": 1})
        assert (reply.status, reply.error_code) == (503, "misconfigured")
    finally:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]
