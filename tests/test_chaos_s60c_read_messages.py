"""A 503 says "may have been applied" only of a change that may have been.

`spool serve` on a private redis-server under `CLIENT PAUSE <ms> WRITE` (what a
FAILOVER and maintenance do): a /metrics scrape's first store call is the keyspace's
summaries install, a write script, which the pause holds past the store's timeout. It
answered 503 "the job store connection failed before it answered, so this change may
have been applied: check its state before retrying (an enqueue is safe to retry with
the same idempotency_key)", to a GET that asked for no change, and `spool top` said
the same (stop 60, helper C). Now the install fails as the read it serves, and any
GET whose store call loses a write's reply says the request changes nothing. An
enqueue during the pause still says "may have been applied": it was sent, and runs if
the pause ends before the connection closes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.errors import UncertainWrite
from tests.apikit import KEY_A, Api, installed, settings_for
from tests.procs import guarded_env, spool_serve, stop
from tests.redis_support import admin, private_server, with_prefix

pytestmark = pytest.mark.timeout(120)

KEY = "key-s60c-0123456789abcdef"
MAYBE = "may have been applied"


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def paused_server(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store_url = with_prefix(server.url, "s60c") + "&timeout=1"
        env = guarded_env(
            SPOOL_STORE_URL=store_url,
            SPOOL_API_KEYS=f"{KEY}=t1",
            SPOOL_DEMO_HANDLERS="true",
            SPOOL_METRICS_PUBLIC="true",
        )
        served = spool_serve("--no-worker", env=env)
        control = admin(server.url)
        try:
            yield served.url, control
        finally:
            control.client_unpause()
            control.close()
            stop(served.proc)


def test_a_scrape_during_a_write_pause_is_not_told_a_change_may_have_applied(
    paused_server: tuple[str, Any],
) -> None:
    url, control = paused_server
    status, created = call(f"{url}/enqueue", "POST", {"type": "echo", "delay": 3600})
    assert status == 201, created
    control.client_pause(60000, all=False)  # WRITE: reads go on
    status, body = call(f"{url}/metrics")
    assert status == 503, body
    assert MAYBE not in body["error"]["message"], body
    assert "idempotency_key" not in body["error"]["message"], body
    status, body = call(f"{url}/status/{created['id']}")
    assert status == 200, body
    # An enqueue was sent: that it may have been applied is true.
    status, body = call(f"{url}/enqueue", "POST", {"type": "echo", "delay": 3600})
    assert status == 503 and MAYBE in body["error"]["message"], body


@pytest.mark.parametrize(
    ("method", "path", "store_call"),
    [
        ("GET", "/jobs", "list_jobs"),
        ("GET", "/dlq", "list_jobs"),
        ("GET", "/status/{id}", "get"),
        ("POST", "/jobs/{id}/cancel", "cancel"),
    ],
)
def test_a_lost_write_reply_says_may_have_applied_only_to_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, path: str, store_call: str
) -> None:
    with installed(settings_for(tmp_path)) as rt, Client(spool_app.app, stage_name="local") as c:
        api = Api(c)
        job = api.enqueue({"type": "echo", "delay": 3600})

        def lost(*args: Any, **kwargs: Any) -> Any:
            raise UncertainWrite("the job store connection failed before it answered")

        monkeypatch.setattr(rt.store, store_call, lost)
        reply = api.call(method, path.format(id=job), key=KEY_A)
    assert reply.status == 503, reply.body
    message = reply.json["error"]["message"]
    if method == "GET":
        assert MAYBE not in message and "changes nothing" in message, message
    else:
        assert MAYBE in message, message
