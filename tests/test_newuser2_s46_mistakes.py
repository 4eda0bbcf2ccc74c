"""A Python developer's mistakes with handlers and the client (stop 46, second round).

Found from outside, by writing a handler module as docs/handlers.md shows, serving it
with `spool serve` and calling it with spool_client as docs/client.md shows:
- a handler returning a datetime (or a set, or any object) sent its job to dead with
  "result is not JSON: Object of type datetime is not JSON serializable": what was wrong,
  never what to return instead;
- `Client.enqueue("add", {"n": date.today()})` raised httpx's bare
  "TypeError: Object of type date is not JSON serializable", naming neither the payload
  nor the fix (or the pydantic model the docs say a payload may be);
- a misspelt type raised `UnknownJobType: 422 unknown_job_type: unknown job type 'adds'`:
  the server's answer lists its types (details["known"]) but a traceback showed none.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.runtime import load_handlers
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from spool_client import AsyncClient, Client, RetryPolicy, UnknownJobType
from tests.factories import new_job


@pytest.mark.parametrize(
    ("result", "named"),
    [
        ({"when": datetime.datetime(2026, 12, 5, 10, 0)}, "datetime"),
        ({"tags": {"a", "b"}}, "set"),
        (object(), "object"),
    ],
    ids=["datetime", "set", "object"],
)
def test_a_result_json_cannot_hold_says_what_to_return(
    mem: MemoryStore, clock: FakeClock, result: Any, named: str
) -> None:
    reg = Registry()

    @reg.handler("report", max_attempts=3)
    def report(payload: dict[str, Any]) -> Any:
        return result

    added = mem.add([new_job(clock, "report", max_attempts=3)])[0].job
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    job = mem.get(added.id)
    assert job is not None and job.state is JobState.DEAD
    error = job.last_error or ""
    assert error.startswith("result is not JSON: ") and named in error
    # What to do: return JSON's own types (or a pydantic model, which is dumped).
    assert "return a dict, list, str, number, bool or None" in error, error
    assert "pydantic model" in error and "isoformat()" in error, error


def _refuse_every_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError("nothing should be sent")


@pytest.mark.parametrize(
    "payload",
    [{"n": datetime.date(2026, 12, 5)}, {"ids": {1, 2}}, {"rows": [{"at": object()}]}],
    ids=["date", "set", "nested-object"],
)
def test_a_payload_json_cannot_hold_is_refused_before_it_is_sent(payload: Any) -> None:
    http = httpx.Client(transport=httpx.MockTransport(_refuse_every_request))
    c = Client("http://127.0.0.1:9", "k", http=http, retry=RetryPolicy(attempts=1))
    with http, c, pytest.raises(TypeError) as refused:
        c.enqueue("add", payload)
    said = str(refused.value)
    assert said.startswith("payload is not JSON"), said
    assert "pydantic model" in said and "isoformat()" in said, said


def test_the_async_client_refuses_it_the_same() -> None:
    async def run() -> str:
        http = httpx.AsyncClient(transport=httpx.MockTransport(_refuse_every_request))
        async with http, AsyncClient("http://127.0.0.1:9", "k", http=http) as c:
            try:
                await c.enqueue("add", {"n": datetime.date(2026, 12, 5)})
            except TypeError as exc:
                return str(exc)
        return "sent"

    assert asyncio.run(run()).startswith("payload is not JSON")


def _unknown_type(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    error = {
        "code": "unknown_job_type",
        "message": f"unknown job type {sent['type']!r}",
        "details": {"type": sent["type"], "known": ["add", "echo"]},
    }
    return httpx.Response(422, json={"error": error})


def test_a_wrong_type_name_names_the_server_s_types() -> None:
    http = httpx.Client(transport=httpx.MockTransport(_unknown_type))
    c = Client("http://127.0.0.1:9", "k", http=http)
    with http, c, pytest.raises(UnknownJobType) as refused:
        c.enqueue("adds", {"n": 1})
    said = str(refused.value)
    assert "unknown job type 'adds'" in said
    assert "this server's types: add, echo" in said, said
    assert "SPOOL_HANDLERS" in said, said


def _enqueued(request: httpx.Request) -> httpx.Response:
    answer = {"id": "j_1", "state": "queued", "status_url": "/status/j_1", "created": True}
    return httpx.Response(201, json=answer)


def test_the_sync_client_inside_a_running_event_loop_says_to_use_async_client() -> None:
    """Each call blocks the loop (wait() for up to its timeout): every other task
    stops meanwhile, silently. The call still works; a RuntimeWarning says the fix."""
    http = httpx.Client(transport=httpx.MockTransport(_enqueued))

    async def inside() -> str:
        with http, Client("http://127.0.0.1:9", "k", http=http) as c:
            return c.enqueue("add", {"n": 1}).state

    with pytest.warns(RuntimeWarning, match="AsyncClient") as warned:
        assert asyncio.run(inside()) == "queued"
    said = str(warned[0].message)
    assert "blocks the event loop" in said and "asyncio.to_thread" in said, said
    assert warned[0].filename == __file__  # the caller's line, not the client's own


def _one_page(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"jobs": [], "next_cursor": None})


def test_a_listing_s_warning_names_the_caller_s_line_too() -> None:
    http = httpx.Client(transport=httpx.MockTransport(_one_page))

    async def inside() -> int:
        with http, Client("http://127.0.0.1:9", "k", http=http) as c:
            return len(list(c.list(state="queued")))

    with pytest.warns(RuntimeWarning, match="AsyncClient") as warned:
        assert asyncio.run(inside()) == 0
    assert warned[0].filename == __file__, warned[0].filename


def test_the_sync_client_outside_a_loop_or_in_a_thread_says_nothing() -> None:
    http = httpx.Client(transport=httpx.MockTransport(_enqueued))

    async def in_a_thread(c: Client) -> str:
        return (await asyncio.to_thread(c.enqueue, "add", {"n": 1})).state

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with http, Client("http://127.0.0.1:9", "k", http=http) as c:
            assert c.enqueue("add", {"n": 1}).state == "queued"
            assert asyncio.run(in_a_thread(c)) == "queued"


def test_a_handler_module_raising_at_import_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`os.environ["BILLING_KEY"]` at a module's top said only "(KeyError: 'BILLING_KEY')":
    not which file or line of the module to fix."""
    stem = f"billing_jobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{stem}.py").write_text('import os\n\nKEY = os.environ["BILLING_KEY_XYZ"]\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_handlers(Registry(), Settings.from_env({"SPOOL_HANDLERS": stem}))
    said = str(refused.value)
    assert f"importing '{stem}' failed (KeyError: 'BILLING_KEY_XYZ')" in said
    assert f"at {stem}.py, line 3" in said, said
    assert said.endswith("Fix the module; see docs/handlers.md"), said


def test_a_decorator_refusal_names_the_module_s_line_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stem = f"limited_jobs_{uuid.uuid4().hex[:8]}"
    body = (
        "from chalicelib.handlers import handler\n\n\n"
        '@handler("add", concurrency=0)\n'
        "def add(payload):\n    return payload\n"
    )
    (tmp_path / f"{stem}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        load_handlers(Registry(), Settings.from_env({"SPOOL_HANDLERS": stem}))
    said = str(refused.value)
    assert "concurrency=0" in said and f"{stem}.py, line 4" in said, said
