"""A traceback's text reaches a text log line escaped as its message is (stop 59, helper d).

Was (found against `spool serve` over a socket): a handler's admit check that raised
with a payload's words (`RuntimeError(payload["note"])`) logged the traceback with the
payload's text raw. The message part of a text line writes control characters, bidi
overrides and the characters drawn as nothing as escapes (logs._UNSEEN, one_line); the
traceback part, masked by the same redactor, wrote them as they came: U+202E turned the
rest of the line around in a log viewer, ESC [31m coloured the operator's terminal, a
CR let the text overwrite what a terminal had drawn of the line.

Now the traceback part escapes the same characters as the message, bar the newline and
tab a traceback is made of. (The JSON format puts the traceback in a JSON string, whose
escapes stop 58 covered.)
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib import logs
from chalicelib.config import Settings
from tests.procs import ROOT, guarded_env, spool_serve_logged, stop

pytestmark = pytest.mark.timeout(120)

KEY, TENANT = "s59d-traceback-key-0123456789", "acme"
RLO, ZWSP, ESC, CR, NEL, LS = "\u202e", "\u200b", "\x1b", "\r", "\x85", "\u2028"
NOTE = f"x{RLO}live{ZWSP} {ESC}[31mred{CR}over{NEL}next{LS}end"
RAW = (RLO, ZWSP, ESC, CR, NEL, LS)
HANDLERS = (
    "from chalicelib.handlers import handler\n\n\n"
    "def _admit(payload, tenant):\n"
    "    raise RuntimeError(payload['note'])\n\n\n"
    "@handler('checked', admit=_admit)\n"
    "def checked(payload: dict) -> dict:\n"
    "    return {}\n"
)


def _raw_in(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in RAW if c in text]


def test_a_served_admit_check_s_traceback_is_logged_escaped(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_HANDLERS="myapp.jobs",
        PYTHONPATH=f"{tmp_path}:{ROOT}",
    )
    log = tmp_path / "serve.log"
    served = spool_serve_logged(log, env=env)
    try:
        reply = requests.post(
            f"{served.url}/enqueue",
            json={"type": "checked", "payload": {"note": NOTE}},
            headers={"X-API-Key": KEY},
            timeout=10,
        )
        assert reply.status_code == 503, reply.text
    finally:
        stop(served.proc)
    text = log.read_bytes().decode("utf-8")
    _, _, rest = text.partition("payload check raised\n")
    assert rest.startswith("Traceback (most recent call last):"), text
    told = rest.split("RuntimeError: ", 1)[1].split("\n", 1)[0]
    assert told == "x\\u202elive\\u200b \\u001b[31mred\\rover\\u0085next\\u2028end"
    assert _raw_in(rest) == [], rest


@pytest.fixture
def text_stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure(Settings(), stream=buf, force=True)
    yield buf
    logs.reset()


def test_a_traceback_keeps_its_lines_and_tabs(text_stream: io.StringIO) -> None:
    """The newline and tab a traceback is made of stay; the message's escapes match."""
    try:
        raise ValueError(f"tab\there {NOTE}")
    except ValueError:
        logging.getLogger("spool.test").exception("failed: %s", NOTE)
    out = text_stream.getvalue()
    first, *tail = out.rstrip("\n").split("\n")
    assert tail[0] == "Traceback (most recent call last):"
    assert tail[-1] == f"ValueError: tab\there {logs.one_line(NOTE)}"
    assert first.endswith(f"failed: {logs.one_line(NOTE)}")
    assert _raw_in(out) == []
