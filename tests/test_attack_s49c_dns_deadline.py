"""A name whose DNS lookup never answers cannot hold an http_request or a webhook past
its timeout.

Was (stop 49, found reading chalicelib/builtin/http_request.py while probing the SSRF
guard): the request's deadline bounded the connect, the TLS handshake and every read,
but not the name lookup before them. Whoever may enqueue chooses the URL, so also its
name's DNS servers: one that never answers held the worker's lookup for as long as the
resolver kept asking (glibc: 5 s per try, two tries per name server, A and AAAA),
past http_request's `timeout` ("the whole request, redirects included", docs/
handlers.md) and past SPOOL_WEBHOOK_TIMEOUT ("connect to answer"), which a webhook
delivery's lease (twice the timeout plus 5 s) and the scheduled drain's
"an attempt still fits before the deadline" both count on.

Now the lookup is waited for only until the request's deadline: past it the attempt
ends with a TimeoutError (retried, like any other timeout), and the lookup left behind
answers to no one. The tests' resolver stays blocked until each test has looked: the
attempt ends while its lookup is still pending, which it could not before.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from chalicelib import ssrf
from chalicelib.builtin import http_request as hr
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from tests.factories import new_job, token

# Long enough that a lookup waited for whole cannot end inside the test's check.
HELD = 30.0


class SilentDns:
    """A resolver that answers nothing until released (or HELD seconds pass)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = threading.Event()
        self.answered = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        self.release.wait(HELD)
        self.answered.set()
        return ["127.0.0.1"]


@pytest.fixture
def dns() -> Iterator[SilentDns]:
    silent = SilentDns()
    yield silent
    silent.release.set()


def test_an_unanswered_lookup_ends_the_request_by_its_timeout(dns: SilentDns) -> None:
    payload = hr.HttpRequestPayload(url="http://hooks.example.com:8080/", timeout=0.2)
    policy = ssrf.Policy.parse(["hooks.example.com"], allow_private=True)
    with pytest.raises(TimeoutError, match=r"looking up .hooks\.example\.com. in DNS"):
        hr.perform(payload, policy, resolver=dns)
    assert dns.asked == ["hooks.example.com"]
    # It ended while its lookup was still unanswered: the lookup did not hold it.
    assert not dns.answered.is_set()


def test_an_unanswered_lookup_ends_a_webhook_attempt_by_its_timeout(dns: SilentDns) -> None:
    store = MemoryStore(FakeClock())
    clock = store.clock
    assert isinstance(clock, FakeClock)
    job = store.add(
        [new_job(clock, tenant="acme", callback_url="http://hooks.example.com:8080/x")]
    )[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result=1)])
    settings = Settings(
        extra={
            "SPOOL_WEBHOOKS": json.dumps({"acme": {"secrets": [signing.new_secret()]}}),
            "SPOOL_WEBHOOK_TIMEOUT": "0.2",
        }
    )
    deliverer = Deliverer(store, settings, resolver=dns)
    try:
        assert deliverer.drain() == 1
    finally:
        dns.release.set()
        deliverer.close()
    [delivery] = store.webhooks(job.id)
    assert delivery.state == "pending", delivery  # retried, as any timeout is
    assert "TimeoutError" in (delivery.last_error or ""), delivery.last_error
    assert "hooks.example.com" in (delivery.last_error or "")
