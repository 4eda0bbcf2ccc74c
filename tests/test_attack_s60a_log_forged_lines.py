"""An exception's own text cannot start a line of a text log (stop 60, helper a).

Was (found with a real `spool worker --burst` and a handler module): a handler that
logged `ctx.log.exception(...)` over `ValueError(payload["note"])` wrote the note's
newline raw inside the traceback, so a payload of
`bad\\n2026-12-06T23:00:00.000Z INFO spool.jobs: job succeeded ... job_id=j_forged`
made the log show a `job succeeded` line no job wrote. Stop 59 escaped a traceback's
control and hidden characters but kept its newlines, the message's among them.

Now the exception's message, its notes and a SyntaxError's text are written with
their line breaks escaped, through the whole chain (cause, context, the members of an
exception group), as the message part of the line already was; the traceback's own
lines are as Python writes them. JSON lines stay one object per line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest

from chalicelib import logs
from chalicelib.config import Settings
from tests import test_attack_s58c_log_hidden_text
from tests.procs import ROOT, run_spool

pytestmark = pytest.mark.timeout(120)

FORGED = "2026-12-06T23:00:00.000Z INFO spool.jobs: job succeeded event=succeeded job_id=j_forged"
# Every line break a reader or a terminal obeys, each before a forged line.
BREAKS = ("\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029")
NOTE = "bad" + "".join(f"{brk}{FORGED}" for brk in BREAKS)
# A line of a text log: its stamp, or one a traceback is made of.
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")

HANDLERS = (
    "from chalicelib.handlers import JobContext, handler\n\n\n"
    "@handler('boom', max_attempts=1)\n"
    "def boom(payload: dict, ctx: JobContext) -> dict:\n"
    "    try:\n"
    "        raise ValueError(payload['note'])\n"
    "    except ValueError as exc:\n"
    "        exc.add_note(payload['note'])\n"
    "        ctx.log.exception('caught')\n"
    "    raise RuntimeError(payload['note'])\n"
)


def _forged(text: str) -> list[str]:
    """Lines that start as FORGED does, wherever a reader splits lines."""
    lines = re.split("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", text)
    return [line for line in lines if line.startswith(FORGED[:24])]


def test_a_worker_s_log_holds_no_line_a_payload_wrote(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    env = {"SPOOL_HANDLERS": "myapp.jobs", "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    added = run_spool(tmp_path, "enqueue", "boom", "--payload", json.dumps({"note": NOTE}), **env)
    assert added.returncode == 0, added.stderr
    ran = run_spool(tmp_path, "worker", "--burst", "--quiet", **env)
    assert ran.returncode == 0, ran.stderr
    log = ran.stderr
    assert "Traceback (most recent call last):" in log, log
    assert "job dead" in log, log
    assert _forged(log) == [], log
    told = [line for line in log.split("\n") if line.startswith("ValueError: bad")]
    assert told == [f"ValueError: {logs.one_line(NOTE)}"], log
    assert f"\n{logs.one_line(NOTE)}\n" in log, log  # the note, on one line of its own


# Spool's text and JSON handlers on a buffer: the fixtures of the hidden-text tests.
text_stream = test_attack_s58c_log_hidden_text.text_stream
json_stream = test_attack_s58c_log_hidden_text.json_stream


def _log_chain() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError(NOTE) from inner
    except RuntimeError as outer:
        try:
            raise ExceptionGroup("group", [ValueError(NOTE), outer])
        except ExceptionGroup:
            logging.getLogger("spool.test").exception("failed")


def test_every_text_an_exception_chain_carries_stays_on_its_line(
    text_stream: io.StringIO,
) -> None:
    _log_chain()
    try:
        compile(f"x = ({NOTE}", f"file{NOTE}", "exec")
    except SyntaxError:
        logging.getLogger("spool.test").exception("compiled")
    out = text_stream.getvalue()
    assert _forged(out) == [], out
    lines = out.split("\n")
    assert sum(1 for line in lines if STAMP.match(line)) == 2, out
    assert "The above exception was the direct cause" in out  # the chain is all there
    assert f"RuntimeError: {logs.one_line(NOTE)}" in out


def test_a_traceback_s_own_lines_are_kept(text_stream: io.StringIO) -> None:
    """A message with no line break is written as Python writes it."""
    try:
        raise ValueError("plain\ttext")
    except ValueError:
        logging.getLogger("spool.test").exception("failed")
    first, *tail = text_stream.getvalue().rstrip("\n").split("\n")
    assert first.endswith("ERROR spool.test: failed")
    assert tail[0] == "Traceback (most recent call last):"
    assert tail[-2] == '    raise ValueError("plain\\ttext")'
    assert tail[-1] == "ValueError: plain\ttext"


def test_json_lines_stay_one_object_each(json_stream: io.StringIO) -> None:
    _log_chain()
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert NOTE in record["exc_info"]


# What Python writes to stderr itself, from a handler's doing, and a field name a
# handler took from its payload. Was: the warning, the thread's traceback and the
# `k\nINJECT` name were written raw (no formatter saw the first two), each forging a
# line; under SPOOL_LOG_FORMAT=json they were lines that are not JSON.
STRAY = (
    "import threading, warnings\n"
    "from chalicelib.handlers import JobContext, handler\n\n\n"
    "def _raise(note: str) -> None:\n"
    "    raise ValueError(note)\n\n\n"
    "@handler('stray', max_attempts=1)\n"
    "def stray(payload: dict, ctx: JobContext) -> dict:\n"
    "    warnings.warn(payload['note'])\n"
    "    thread = threading.Thread(target=_raise, args=(payload['note'],), name='mine')\n"
    "    thread.start()\n"
    "    thread.join()\n"
    "    ctx.log.info('fields', extra={payload['note']: 1})\n"
    "    return {}\n"
)


def _run_stray(tmp_path: Path, log_format: str) -> str:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(STRAY)
    env = {
        "SPOOL_HANDLERS": "myapp.jobs",
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "SPOOL_LOG_FORMAT": log_format,
    }
    added = run_spool(tmp_path, "enqueue", "stray", "--payload", json.dumps({"note": NOTE}), **env)
    assert added.returncode == 0, added.stderr
    ran = run_spool(tmp_path, "worker", "--burst", "--quiet", **env)
    assert ran.returncode == 0, ran.stderr
    return ran.stderr


def test_python_s_own_stderr_text_is_a_log_line_too(tmp_path: Path) -> None:
    log = _run_stray(tmp_path, "text")
    assert _forged(log) == [], log
    assert "WARNING py.warnings: " in log and "UserWarning: bad\\n" in log, log
    assert "ERROR spool.thread: exception in thread mine, which nothing caught" in log, log
    assert f"ValueError: {logs.one_line(NOTE)}" in log, log
    assert f" {json.dumps(NOTE, ensure_ascii=False)}=1" not in log  # escaped, not raw JSON
    assert f" {logs.one_line(json.dumps(NOTE, ensure_ascii=False))}=1" in log, log
    assert "job succeeded" in log, log


def test_under_json_every_stderr_line_is_one_object(tmp_path: Path) -> None:
    log = _run_stray(tmp_path, "json")
    records = [json.loads(line) for line in log.splitlines() if line]  # each one JSON
    loggers = [r["logger"] for r in records]
    assert "py.warnings" in loggers and "spool.thread" in loggers, loggers
    fields = next(r for r in records if r["message"] == "fields")
    assert fields[NOTE] == 1


def test_on_lambda_a_warning_is_one_event_of_the_runtime_s_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Lambda each raw stderr line is an event of its own: a warning holding a
    payload's newline and a JSON object forged an event Logs Insights read as Spool's.
    It goes through the runtime's handler now, one JSON line."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "spool-worker")
    forged = json.dumps({"level": "INFO", "logger": "spool.jobs", "message": "job succeeded"})
    captured = io.StringIO()
    root = logging.getLogger()
    runtime = logging.StreamHandler(captured)  # stands for the Lambda runtime's handler
    root.addHandler(runtime)
    try:
        logs.configure(Settings(), force=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"bad\n{forged}", UserWarning, stacklevel=1)
    finally:
        logs.reset()
        root.removeHandler(runtime)
    [line] = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["logger"] == "py.warnings" and forged in record["message"]
