"""send_email's error names the SMTP server it could not talk to, and the settings.

Found by following docs/handlers.md as a new user (helper E, s58): with the relay
down, a `send_email` job's `last_error` (and the worker's log line) was
`TemporaryFailure: ConnectionRefusedError: [Errno 111] Connection refused`: refused
by what? Nothing said which host and port the worker had tried, nor which settings
choose them, though a TLS failure already named the host. A connection that fails,
or a server that drops the conversation, is now said as `SMTP server HOST:PORT
(SPOOL_SMTP_HOST, SPOOL_SMTP_PORT): ...`, still retried.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from chalicelib.builtin import email as mail
from tests.test_email import point_at, send


def test_a_refused_connection_names_the_server_and_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    point_at(monkeypatch, port)
    with pytest.raises(mail.TemporaryFailure) as raised:
        send()
    text = str(raised.value)
    assert f"SMTP server 127.0.0.1:{port} (SPOOL_SMTP_HOST, SPOOL_SMTP_PORT)" in text
    assert "ConnectionRefusedError" in text  # the cause is kept


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A server that accepts each connection and closes it before any greeting."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_server_that_hangs_up_is_named_too(
    monkeypatch: pytest.MonkeyPatch, hangs_up: int
) -> None:
    point_at(monkeypatch, hangs_up)
    with pytest.raises(mail.TemporaryFailure) as raised:
        send()
    assert f"SMTP server 127.0.0.1:{hangs_up} (SPOOL_SMTP_HOST, SPOOL_SMTP_PORT)" in str(
        raised.value
    )


def test_an_ipv6_server_is_written_with_brackets() -> None:
    config = mail.SmtpSettings(host="::1", port=2525)
    assert mail.server_named(config).startswith("SMTP server [::1]:2525 ")
