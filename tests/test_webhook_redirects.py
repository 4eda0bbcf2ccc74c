"""A receiver that answers a webhook with a redirect is not followed: the Location
could name any address (the metadata service, a private host) that the guard
checked nothing about, so a 3xx is an answer like a 5xx, retried at the URL the job
was given. Two loopback receivers, no traffic leaves 127.0.0.0/8."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from tests.factories import new_job, token
from tests.webhook_receiver import Receiver


@pytest.fixture
def target() -> Iterator[Receiver]:
    """Where the redirect points: it must never be called."""
    receiver = Receiver().up()
    yield receiver
    receiver.down()


def redirector(status: int, location: str) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_answer_retried_never_followed(target: Receiver, status: int) -> None:
    server = redirector(status, target.url)
    try:
        clock = FakeClock()
        store = MemoryStore(clock)
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
        job = store.add([new_job(clock, tenant="acme", callback_url=url)])[0].job
        [running] = store.claim(1, 30)
        store.finish([Completion(job.id, token(running), JobState.SUCCEEDED)])
        settings = Settings(
            extra={
                "SPOOL_WEBHOOKS": json.dumps({"acme": {"secrets": [signing.new_secret()]}}),
                "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",  # both receivers are on loopback
                "SPOOL_WEBHOOK_TIMEOUT": "2",
            }
        )
        Deliverer(store, settings).drain()
    finally:
        server.shutdown()
        server.server_close()
    [delivery] = store.webhooks(job.id)
    assert delivery.state == "pending" and delivery.url == url
    assert f"HTTP {status}" in (delivery.last_error or "")
    assert target.requests == []
