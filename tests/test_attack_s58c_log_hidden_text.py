"""Text a client chooses reaches the log with nothing a reader's screen obeys or hides
(stop 58, helper c).

Was (found against `spool serve` over a socket, no key needed): `GET /status/<id>`
logs the id from the path, key or no key, and a job's error (a handler's exception
text: a payload's words, a remote server's) is logged when it fails. Stop 41 made
the text format write C0/C1 controls, DEL and U+2028/U+2029 as escapes; two ways
still wrote what a client chose raw:

- the text format passed Unicode's format characters (category Cf) and the
  characters drawn as nothing: a right-to-left override (U+202E) in an id made a
  log viewer (CloudWatch's console, Grafana, a bidi terminal) draw the rest of the
  line backwards, so `status=401` could read as anything the sender spelt in
  reverse; a zero-width space, a tag character (U+E0000-E007F) or a Hangul filler
  made two different ids read alike. The dashboard (stop 55) and the command line
  (stop 56) show these as escapes; the log did not.
- the JSON format (Lambda's default, SPOOL_LOG_FORMAT=json) had none of stop 41's
  escapes: json.dumps(ensure_ascii=False) escapes only C0, so NEL and U+2028 (line
  breaks to many readers), U+009B (a terminal's CSI, as ESC [ is), DEL and every Cf
  character went out raw.

Now both formats write all of them as JSON escapes (`\\u202e`, `\\u0085`): the line
reads as what was sent, and a JSON reader decodes the same value.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
import requests

from chalicelib import logs
from chalicelib.config import Settings
from local.tables import BLANK
from tests.procs import guarded_env, spool_serve_logged, stop
from tests.test_log_fastline import NOW, _through_logging

pytestmark = pytest.mark.timeout(120)

KEY, TENANT = "s58c-hidden-key-0123456789", "acme"
HEADERS = {"X-API-Key": KEY}

# What a reader's screen obeys or draws as nothing, each a kind the log wrote raw.
RLO, ZWSP, TAG_A, FILLER, BOM = "\u202e", "\u200b", "\U000e0041", "\u3164", "\ufeff"
HIDDEN = (RLO, ZWSP, TAG_A, FILLER, BOM, "\u2066", "\u200f")
# What stop 41 escaped in the text format only.
BREAKING = ("\x85", "\x9b", "\x7f", "\u2028", "\u2029")
# An id that reads `j_... status=200` to a bidi viewer; its bytes say otherwise.
SPOOFED_ID = f"j_{RLO}002=sutats{ZWSP}{TAG_A}{FILLER}{BOM}"


def _every_format_character() -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]


def _raw_in(line: str, chars: tuple[str, ...] | list[str]) -> list[str]:
    return [f"U+{ord(c):04X}" for c in chars if c in line]


def _finished(base: str, job_id: str) -> dict[str, Any]:
    """The job once it is dead or succeeded (bounded poll: 30 s)."""
    body: dict[str, Any] = {}
    for _ in range(300):
        reply = requests.get(f"{base}/status/{job_id}", headers=HEADERS, timeout=10)
        body = reply.json()
        if body.get("state") in ("succeeded", "dead"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish: {body}")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_what_a_client_sends_reaches_the_log_escaped(tmp_path: Path, log_format: str) -> None:
    """Over a socket to a real `spool serve`: an id in the path (no key, and a key that
    has no such job) and a job's error text. (A control character in a path is no
    route, answered before any id is read.)"""
    log = tmp_path / "serve.log"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_LOG_FORMAT=log_format,
    )
    message = f"refused {RLO}gnp.eciovni{ZWSP} \x85\x9b31m\u2028 done"
    served = spool_serve_logged(log, "--threads", "4", env=env)
    try:
        path = f"{served.url}/status/{quote(SPOOFED_ID)}"
        assert requests.get(path, timeout=10).status_code == 401
        assert requests.get(path, headers=HEADERS, timeout=10).status_code == 404
        made = requests.post(
            f"{served.url}/enqueue",
            json={
                "type": "fail",
                "max_attempts": 1,
                "payload": {"always": True, "message": message},
            },
            headers=HEADERS,
            timeout=10,
        )
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        assert _finished(served.url, job_id)["state"] == "dead"
    finally:
        stop(served.proc)
    # Split at "\n" alone: splitlines() also breaks at NEL and U+2028, raw or not.
    lines = log.read_text(encoding="utf-8").split("\n")
    asked = [line for line in lines if "GET /status/{id} 40" in line]
    dead = [line for line in lines if job_id in line and ("job dead" in line)]
    assert len(asked) == 2 and len(dead) == 1, lines
    for line in [*asked, *dead]:
        assert _raw_in(line, [*HIDDEN, *BREAKING]) == [], line
    if log_format == "json":
        ids = [json.loads(line)["job_id"] for line in asked]
        error = json.loads(dead[0])["error"]
    else:
        ids = [json.loads(line.split(" job_id=", 1)[1].split(" ", 1)[0]) for line in asked]
        error = json.loads(dead[0].split(" error=", 1)[1].split('" ', 1)[0] + '"')
    assert ids == [SPOOFED_ID] * 2  # decodes to what was sent
    assert message in error


@pytest.fixture
def text_stream() -> Iterator[io.StringIO]:
    """Spool's text handler on a buffer, as `spool serve` and `spool worker` have it."""
    buf = io.StringIO()
    logs.configure(Settings(), stream=buf, force=True)
    yield buf
    logs.reset()


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    """Spool's JSON handler on a buffer, as Lambda (and SPOOL_LOG_FORMAT=json) has it."""
    buf = io.StringIO()
    logs.configure(Settings(extra={"SPOOL_LOG_FORMAT": "json"}), stream=buf, force=True)
    yield buf
    logs.reset()


def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", clock)


def test_every_format_character_and_blank_is_escaped_in_a_text_field_and_message(
    text_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole class, checked against unicodedata (Cf) and the command line's BLANK
    list, on both ways a text line is made (the fast line and logging's record)."""
    _clock(monkeypatch)
    hidden = _every_format_character() + [chr(c) for c in sorted(BLANK)]
    value = "j_" + "".join(hidden)
    extra = {"event": "http_request", "job_id": value}
    fast = logs.text_line("spool.http", logging.INFO, "x" + "".join(hidden), extra)
    slow = _through_logging("spool.http", logging.INFO, "x" + "".join(hidden), extra)
    assert fast == slow
    assert _raw_in(slow, hidden) == []
    assert json.loads(slow.split(" job_id=", 1)[1]) == value


def test_every_such_character_is_escaped_in_a_json_line(json_stream: io.StringIO) -> None:
    hidden = _every_format_character() + [chr(c) for c in sorted(BLANK)] + list(BREAKING)
    value = "j_" + "".join(hidden)
    logging.getLogger("spool.http").info(
        "x" + "".join(hidden), extra={"event": "http_request", "job_id": value}
    )
    [line] = json_stream.getvalue().rstrip("\n").split("\n")
    assert _raw_in(line, hidden) == []
    record = json.loads(line)
    assert (record["job_id"], record["message"]) == (value, "x" + "".join(hidden))


WORDS = "naïve 日本語 עברית العربية 👩💻 ❤\ufe0f a\u00a0b"


def test_text_of_any_script_is_written_as_it_is_in_a_text_line(
    text_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters of any script, emoji (a variation selector too) and a no-break space
    are text, not hidden: a log line keeps them readable. (A zero-width joiner is
    Cf, and escaped: a log reader is not drawing emoji.)"""
    _clock(monkeypatch)
    line = logs.text_line("spool.http", logging.INFO, WORDS, {"event": "x", "error": WORDS})
    assert line.count(WORDS) == 2


def test_text_of_any_script_is_written_as_it_is_in_a_json_line(json_stream: io.StringIO) -> None:
    logging.getLogger("spool.http").info(WORDS, extra={"event": "x", "error": WORDS})
    [line] = json_stream.getvalue().splitlines()
    assert line.count(WORDS) == 2
    assert json.loads(line)["error"] == WORDS
