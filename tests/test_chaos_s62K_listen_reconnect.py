"""A worker's lost LISTEN connection is replaced at once, not after the fallback poll
(stop 62, helper K).

Was (found with `spool worker` on Postgres and pg_terminate_backend of its sessions):
PgNotifier.wait, on losing its connection, logged the loss and waited out the rest of
its timeout (idle_poll, 1 s) with no connection; only the next wait subscribed again.
A job enqueued in that window sent a NOTIFY nobody heard and waited for the worker's
fallback poll (up to ~0.45 s more in the measurement). Now the wait that sees the loss
reconnects at once and reports a wake-up (notifications sent meanwhile are lost); only
a reconnect that fails too waits out the timeout, and the next wait tries again.

Deterministic: the fallback wait (a `readable` on the self-pipe alone) is recorded and
answered at once, so the order of connect and fallback is what is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import chalicelib.storage.postgres as pg
from chalicelib import fdwait
from chalicelib.clock import FakeClock
from chalicelib.storage.postgres import PostgresStore, parse_url
from tests.pg_support import fresh_schema, terminate

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    with fresh_schema() as url:
        opened = PostgresStore(parse_url(url), FakeClock())
        try:
            yield opened
        finally:
            opened.close()


class Recorder:
    """Records the notifier's connects and fallback waits, in order; `fail` makes the
    next connects raise (a server still going away)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, notifier: pg.PgNotifier) -> None:
        self.events: list[str] = []
        self.fail = 0
        real_connect, real_readable = pg.connect, fdwait.readable
        rpipe = notifier._rpipe

        def connect(settings: Any) -> Any:
            self.events.append("connect")
            if self.fail:
                self.fail -= 1
                raise psycopg.OperationalError("connection failed: Connection refused")
            return real_connect(settings)

        def readable(fds: list[int], timeout: float) -> Any:
            if list(fds) == [rpipe]:
                self.events.append("fallback")
                return []  # the rest of the timeout, waited out at once
            return real_readable(fds, timeout)

        monkeypatch.setattr(pg, "connect", connect)
        monkeypatch.setattr(pg, "readable", readable)


def _cut(store: PostgresStore) -> None:
    name = store.settings.schema
    assert name is not None
    assert terminate(name) >= 1


def test_a_lost_listen_connection_is_replaced_before_the_fallback_wait(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = store.notifier
    recorder = Recorder(monkeypatch, notifier)
    assert notifier.wait(0) is False  # subscribed
    before = notifier._conn
    assert before is not None and recorder.events == ["connect"]
    _cut(store)
    # Long: the loss is seen at once (the server's FATAL and EOF are on the socket).
    assert notifier.wait(60) is True  # a wake-up: notifications may have been lost
    assert recorder.events == ["connect", "connect"], recorder.events
    after = notifier._conn
    assert after is not None and after is not before and not after.closed
    # And it listens: the next wait hears an add.
    store.notifier.notify()
    assert notifier.wait(60) is True
    assert recorder.events == ["connect", "connect"], recorder.events


def test_a_reconnect_that_fails_too_backs_off_to_the_fallback_wait(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = store.notifier
    recorder = Recorder(monkeypatch, notifier)
    assert notifier.wait(0) is False
    _cut(store)
    recorder.fail = 1
    assert notifier.wait(60) is False  # one try at once, then the timeout waited out
    assert recorder.events == ["connect", "connect", "fallback"], recorder.events
    # The next wait tries again; it fails: no second try at once (backoff).
    recorder.fail = 1
    assert notifier.wait(60) is False
    assert recorder.events[3:] == ["connect", "fallback"], recorder.events
    # Then it connects, and says a wake-up (notifications were lost meanwhile).
    assert notifier.wait(60) is True
    assert recorder.events[5:] == ["connect"], recorder.events
    assert notifier.wait(0) is False
