"""Spool's logs: one structured line per job event and per HTTP request.

`configure(settings)` runs once per process (runtime building and the CLI call
it; the first call wins, later ones only add the secrets they know):

- SPOOL_LOG_LEVEL (INFO): the level of every `spool.*` logger. Other libraries
  keep theirs.
- SPOOL_LOG_FORMAT: `json` (one JSON object per line, for CloudWatch Logs
  Insights: the default on Lambda) or `text` (`2025-06-01T12:00:00.123Z INFO
  spool.jobs: job dead job_id=j_... attempt=5 ...`, the default elsewhere).
  JSON lines are written by python-json-logger, imported only when chosen.
- SPOOL_LOG_TAIL_LINES (20): how many of a handler's last `ctx.log` lines each
  attempt keeps for its record (chalicelib/handlers.py JobContext.log_tail).

On Lambda the runtime's own root handler is kept (it frames each record as one
CloudWatch event) and given Spool's formatter; elsewhere one handler on the
root logger writes to stderr. Either way a filter masks secrets on every record
(chalicelib/log_redact.py) and adds the Lambda request id during an invocation.

The job events (enqueued, started, succeeded, retrying, dead, lease_expired,
lease_lost, cancelled, redriven) go to `spool.jobs` through `job_event`, each
with job_id, tenant, type, queue and attempt; requests go to `spool.http`
through `http_request`. Payloads, results and request headers are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO

from chalicelib import handler_output, log_traceback, std_streams, stray_output
from chalicelib.config import ConfigError, Settings
from chalicelib.jsonstrict import is_utf8, replaced_surrogates
from chalicelib.log_redact import has_shape_word, redactor

if TYPE_CHECKING:
    from chalicelib.models import Job

LEVEL = "SPOOL_LOG_LEVEL"
FORMAT = "SPOOL_LOG_FORMAT"
TAIL_LINES = "SPOOL_LOG_TAIL_LINES"
DEFAULT_LEVEL = "INFO"
DEFAULT_TAIL_LINES = 20
MAX_TAIL_LINES = 1000
TAIL_LINE_CHARS = 500
FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

jobs_log = logging.getLogger("spool.jobs")
http_log = logging.getLogger("spool.http")
HANDLER_LOGGER = "spool.handler"

# Attributes every LogRecord has; anything else on a record is a structured field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Field values that cannot hold a secret: left as they are without a call.
_PLAIN = frozenset({int, float, bool})

_lock = threading.Lock()
_configured = False
_tail_lines = DEFAULT_TAIL_LINES
_request_id: str | None = None
# What configure changed, so reset() can put it back: (handler, whether we added it,
# its formatter before).
_touched: list[tuple[logging.Handler, bool, logging.Formatter | None]] = []
# The formatter and the stream configure chose: what keep_on_root puts back.
_chosen: tuple[logging.Formatter, TextIO | None] | None = None
_replaced_said = False


def on_lambda(env: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get("AWS_LAMBDA_FUNCTION_NAME"))


def _host_logs(env: Mapping[str, str] | None) -> bool:
    """Whether the root logger's handlers are a host's, to format and mask through
    rather than to add a handler beside: the Lambda runtime's (it frames each line),
    and the chalice command's (`chalice local` gives the root a bare stdout handler
    before it loads app.py; a handler of Spool's beside it wrote every line twice, and
    the bare copy before the masking filter had run)."""
    found = os.environ if env is None else env
    return on_lambda(env) or bool(found.get("AWS_CHALICE_CLI_MODE"))


def level_of(settings: Settings, default: str = DEFAULT_LEVEL) -> int:
    name = settings.text("SPOOL_LOG_LEVEL", default).upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ConfigError(f"{LEVEL} must be one of {', '.join(LEVELS)}, not {name!r}")
    return int(logging.getLevelName(name))


def format_of(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    chosen = settings.text("SPOOL_LOG_FORMAT", "json" if on_lambda(env) else "text").lower()
    if chosen not in FORMATS:
        raise ConfigError(f"{FORMAT} must be json or text, not {chosen!r}")
    return chosen


def configure(
    settings: Settings | None = None,
    *,
    stream: TextIO | None = None,
    default_level: str = DEFAULT_LEVEL,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> None:
    """Set up Spool's logging for this process (once; `force` sets it up again).

    `stream`: where lines go instead of stderr (tests). `default_level`: the
    level when SPOOL_LOG_LEVEL is unset (one-shot CLI commands pass WARNING so
    `spool enqueue` prints no INFO line of its own). A bad SPOOL_LOG_* value is
    a ConfigError naming the variable.
    """
    global _configured, _tail_lines, _chosen
    settings = settings or Settings.from_env(env)
    with _lock:
        redactor.add_settings(settings)
        if _configured and not force:
            return
        level = level_of(settings, default_level)
        chosen = format_of(settings, env)
        tail = settings.integer("SPOOL_LOG_TAIL_LINES", DEFAULT_TAIL_LINES, 0, MAX_TAIL_LINES)
        _undo()
        formatter = json_formatter() if chosen == "json" else TextFormatter()
        root = logging.getLogger()
        if stream is None and _host_logs(env) and root.handlers:
            _adopt(root, formatter)  # the host's: keep its framing and stream
            # Lambda makes each raw stderr line a log event of its own: a warning's
            # newline forged one, a JSON object Logs Insights reads as Spool's.
            stray_output.route()
            handler_output.install(settings)  # a handler's print, too
        else:
            # Spool's lines outlive a handler's close of stderr, and what Python
            # writes there itself (a warning, a thread's traceback) is a log line too.
            if stream is None and std_streams.keep():
                stray_output.route()
                handler_output.install(settings)  # a handler's prints: its job's lines
            _add(root, formatter, stream)
        _chosen = (formatter, stream)
        logging.getLogger("spool").setLevel(level)
        _tail_lines = tail
        _configured = True


def _adopt(root: logging.Logger, formatter: logging.Formatter) -> None:
    """Format and mask through the root's handlers (a host's), keeping their streams."""
    for handler in root.handlers:
        _touched.append((handler, False, handler.formatter))
        handler.setFormatter(formatter)
        handler.addFilter(_filter)


def _add(root: logging.Logger, formatter: logging.Formatter, stream: TextIO | None) -> None:
    handler = _Stream(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_filter)
    root.addHandler(handler)
    _touched.append((handler, True, None))


def keep_on_root() -> None:
    """Put Spool's formatting and masking back when every root handler configure set
    up is gone: a handler module's `logging.basicConfig(force=True)` (a script's habit)
    replaced them with a bare one, and every later line lost its fields (`job dead`
    with no job id), its masking (an API key in a payload printed as sent) and its
    escapes (a payload's newline started a line). The handlers found there now are
    formatted and masked as a host's are, with a WARNING once. Cheap when nothing
    changed: the worker calls it after each attempt."""
    global _replaced_said
    touched = _touched
    if not touched or _chosen is None:
        return
    root = logging.getLogger()
    present = root.handlers
    for handler, _, _ in touched:
        if handler in present:
            return
    with _lock:
        if _chosen is None or any(h in root.handlers for h, _, _ in _touched):
            return
        formatter, stream = _chosen
        _undo()
        if root.handlers:
            _adopt(root, formatter)
        else:  # removed, none put in their place (handlers.clear())
            _add(root, formatter, stream)
        say = not _replaced_said
        _replaced_said = True
    if say:
        logging.getLogger("spool.logs").warning(
            "the root logger's handlers were replaced after Spool set them up (a "
            "logging.basicConfig(force=True) or handlers.clear() in a handler module?): "
            "Spool's lines now go through the handlers found there, in its format "
            "(SPOOL_LOG_FORMAT) and masked. To keep a handler of your own, add it "
            "(logging.getLogger().addHandler) instead of replacing Spool's"
        )


def remember(settings: Settings) -> None:
    """Mask the secrets these settings hold too (a runtime rebuilt with a dev key)."""
    redactor.add_settings(settings)


def reset() -> None:
    """Undo configure (tests): handlers, filters and the spool level as they were."""
    global _configured, _tail_lines, _chosen
    with _lock:
        _undo()
        _chosen = None
        std_streams.forget()
        stray_output.unroute()
        handler_output.uninstall()
        logging.getLogger("spool").setLevel(logging.NOTSET)
        _tail_lines = DEFAULT_TAIL_LINES
        _configured = False


def _undo() -> None:
    root = logging.getLogger()
    for handler, added, formatter in _touched:
        handler.removeFilter(_filter)
        if added:
            root.removeHandler(handler)
        else:
            handler.setFormatter(formatter)
    _touched.clear()


def tail_lines() -> int:
    return _tail_lines


def set_request_id(request_id: str | None) -> None:
    """The Lambda invocation running now (None: none); its id goes on every line.

    Process-wide, not per thread: the worker's pool threads log the invocation's
    jobs (on Lambda every thread is the invocation's). Threads that run beside an
    emulated invocation (`spool serve`: its main thread, HTTP, metrics, signals) say
    so (not_in_invocation, outside_invocation, outside_thread), and their lines carry
    no id."""
    global _request_id
    _request_id = request_id or None


_thread = threading.local()


def not_in_invocation() -> None:
    """This thread serves requests, not the invocation whose id set_request_id holds."""
    _thread.outside = True


@contextmanager
def outside_invocation() -> Iterator[None]:
    """This thread runs no invocation for the block (the main thread of `spool serve`,
    whose supervisor and shutdown lines are no job run's): its lines carry no id."""
    before = getattr(_thread, "outside", False)
    _thread.outside = True
    try:
        yield
    finally:
        _thread.outside = before


def outside_thread(
    target: Callable[..., object],
    *,
    name: str,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    daemon: bool = True,
) -> threading.Thread:
    """A thread that runs beside an emulated invocation, never in it (a server's loop, a
    signal relay, a timer, a metrics writer): its lines carry no aws_request_id, however
    long an invocation runs meanwhile. The id is process-wide (set_request_id), so any
    other thread picks it up: every thread local/ starts is made here, unless it runs
    the invocation itself (tests/test_log_threads.py checks)."""
    return _marked_thread(True, target, name, args, kwargs, daemon)


def inherited_thread(
    target: Callable[..., object],
    *,
    name: str,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    daemon: bool = True,
) -> threading.Thread:
    """A thread that belongs where the thread starting it does: in the invocation when
    that one is (a worker's pool, a Lambda's heartbeat, its push), beside it when that
    one is (a checkpoint an HTTP request's write set off under `spool serve`). A new
    thread starts with no mark of its own, so it would otherwise always take the id."""
    return _marked_thread(_is_outside(), target, name, args, kwargs, daemon)


def inherited_pool() -> Callable[[], None]:
    """A ThreadPoolExecutor's `initializer`: its threads belong where the thread making
    the pool does (see inherited_thread)."""
    return _mark if _is_outside() else _leave


def _marked_thread(
    outside: bool,
    target: Callable[..., object],
    name: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    daemon: bool,
) -> threading.Thread:
    def run(*a: Any, **kw: Any) -> None:
        if outside:
            not_in_invocation()
        target(*a, **kw)

    return threading.Thread(target=run, name=name, args=args, kwargs=kwargs, daemon=daemon)


def _is_outside() -> bool:
    return bool(getattr(_thread, "outside", False))


def _mark() -> None:
    not_in_invocation()


def _leave() -> None:
    pass


def _invocation_id() -> str | None:
    if _request_id is None or _is_outside():
        return None
    return _request_id


# -- records and formatters ------------------------------------------------------------


class _Redact(logging.Filter):
    """Masks secrets in the message and in every structured field; adds the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Never raises: logging.Handler does not catch a filter's exception, and a log
        # line must not fail the request or the worker flush that wrote it.
        try:
            record.msg = redactor.text(_message(record))
            record.args = None
            fields = record.__dict__
            for key in fields.keys() - _STANDARD:  # the structured fields only
                value = fields[key]
                if value is not None and type(value) not in _PLAIN:
                    fields[key] = redactor.value(value)
        except Exception as exc:
            record.msg = f"<a log line that could not be redacted: {type(exc).__name__}>"
            record.args = None
            for key in [k for k in record.__dict__ if k not in _STANDARD]:
                del record.__dict__[key]
        request_id = _invocation_id()
        if request_id is not None and "aws_request_id" not in record.__dict__:
            record.aws_request_id = request_id
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad %-format must not lose the line
        return f"{record.msg!s} {record.args!r}"


_filter = _Redact()


class _Stream(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the given stream, or to whatever sys.stderr is at the time of the write
    (a test harness swaps it; a handler bound to the old one would write to a closed file),
    or to the copy of descriptor 2 chalicelib/std_streams.py keeps once configure found
    the process's own stderr: a handler that closed stderr lost every later line."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed or std_streams.stderr_for_logs()
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a failed write as logging does, unless the report fails too: with
        sys.stderr closed (a handler may close it) logging's own report raised
        ValueError out of the log call, and from the worker's thread that wrote job
        outcomes, out of the worker. A line that cannot be written is dropped."""
        with suppress(Exception):
            super().handleError(record)

    def write_lines(self, lines: list[str]) -> None:
        """What emit does with formatted lines; the caller holds the handler's lock."""
        self.stream = stream = self._fixed or std_streams.stderr_for_logs()
        end = self.terminator
        stream.write(end.join(lines) + end)
        stream.flush()


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields (what `extra=` added), None values left out."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


# What a reader's screen obeys or draws as nothing, past what json.dumps escapes (C0):
# DEL, the C1 controls (NEL, and U+009B, a terminal's CSI), U+2028/U+2029, which split
# a line for Python's splitlines() and many log viewers; every format character
# (Unicode category Cf: the bidi overrides and isolates, which made a viewer draw the
# rest of a line backwards, zero-width spaces and joiners, U+FEFF, the tag characters
# that spell hidden text) and the letters drawn as nothing (local/tables.py BLANK: the
# Hangul fillers, U+034F, U+17B4/U+17B5, the braille blank), as the dashboard and the
# command line show them. Each is written as its JSON escape (\u202e, \udb40\udc41):
# the line reads as what was sent, and a JSON reader decodes the same text.
# tests/test_attack_s58c_log_hidden_text.py checks the Cf ranges against unicodedata.
_UNSEEN = (
    "\x7f-\x9f\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u206f\u2800\u3164\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
# A value with any of these, or a space, quote, `=` or backslash, is written as a JSON
# string, so the line still splits on spaces (and a client's NUL or terminal escape in a
# job id reaches the log as \u0000, \u001b), with _UNSEEN escaped too (one_line). A job
# id from a request's path, key or no key, had them written raw.
_NEEDS_QUOTES = re.compile(f'[ "=\\\\\x00-\x1f{_UNSEEN}]')


def _text_value(value: Any) -> str:
    kind = type(value)
    text: str
    if kind is str:  # ids, names and messages: the common case
        text = value
    elif kind is int:  # attempt numbers and counts: no JSON needed
        return str(value)
    elif isinstance(value, float):
        return f"{value:g}"
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return one_line(json.dumps(text, ensure_ascii=False))


def _text_key(key: object) -> str:
    """A field's name as a text line writes it: quoted as a value is when it needs to
    be (a handler's `extra=` may take its names from a payload: `k\nINJECT` started a
    line)."""
    text = str(key)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return one_line(json.dumps(text, ensure_ascii=False))


# What would end or rewrite a line in a message: line breaks (Unicode's too), CR, the
# other C0/C1 controls a terminal obeys (ESC starts its colour codes), and the rest of
# _UNSEEN (a bidi override, a zero-width space). Tab stays.
_LINE_BREAKING = re.compile(f"[\x00-\x08\x0a-\x1f{_UNSEEN}]")
# What json.dumps(ensure_ascii=False) leaves raw in a JSON line and a reader must not
# meet raw: only inside a JSON string can such a character occur, where its escape
# reads back as the same text.
_UNSEEN_JSON = re.compile(f"[{_UNSEEN}]")


def _json_escaped(line: str) -> str:
    """A JSON line with each _UNSEEN character written as its JSON escape. The JSON
    format (Lambda's default) wrote them raw: NEL and U+2028 broke the line for readers
    splitting on them, U+009B reached a terminal as CSI, U+202E turned the line around."""
    if _UNSEEN_JSON.search(line) is None:
        return line
    return _UNSEEN_JSON.sub(lambda m: json.dumps(m.group())[1:-1], line)


# The same characters in a traceback (what follows a text line's first line), bar the
# newline and tab it is made of: an exception's text is often a client's (a payload's
# words raised by an admit check), and the traceback wrote it raw while the message
# beside it escaped it.
_TAIL_BREAKING = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSEEN}]")


def _escaped_tail(tail: str) -> str:
    """A traceback with one_line's escapes for all but its newlines and tabs."""
    if _TAIL_BREAKING.search(tail) is None:
        return tail
    return _TAIL_BREAKING.sub(lambda m: json.dumps(m.group())[1:-1], tail)


def one_line(message: str) -> str:
    """`message` with its line breaks and control characters written as escapes (\\n,
    \\u001b): a handler logging a payload's text must not forge a second line (`...
    ERROR spool.http: ...`) or colour the operator's terminal. Key=value fields are
    quoted the same way (_text_value)."""
    if _LINE_BREAKING.search(message) is None:
        return message
    return _LINE_BREAKING.sub(lambda m: json.dumps(m.group())[1:-1], message)


class TextFormatter(logging.Formatter):
    """`<UTC time> LEVEL logger: message key=value ...`, one line (tracebacks follow)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_stamp(int(record.created), int(record.msecs))

    def formatMessage(self, record: logging.LogRecord) -> str:
        # record.message is set anew by each Formatter.format: changing it here is ours.
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """The traceback with the exceptions' own text (message, notes) on one line
        each (chalicelib/log_traceback.py): a newline in a payload's words raised
        by a handler forged a whole log line after `ValueError: `."""
        if not isinstance(ei, tuple) or not isinstance(ei[1], BaseException):
            return super().formatException(ei)
        try:
            text = log_traceback.told(ei, one_line)
        except Exception:  # the traceback module's own failure: logging's way, as ever
            return super().formatException(ei)
        return text if is_utf8(text) else replaced_surrogates(text)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            # Made here whoever cached it first (logging keeps one exc_text for every
            # handler; ctx.log's filter makes one when it holds a lone surrogate).
            record.exc_text = self.formatException(record.exc_info)
        line = super().format(record)
        pairs = " ".join(f"{_text_key(k)}={_text_value(v)}" for k, v in fields_of(record).items())
        head, newline, rest = line.partition("\n")
        rest = _escaped_tail(rest)
        return redactor.text(
            f"{head} {pairs}{newline}{rest}" if pairs else f"{head}{newline}{rest}"
        )


def json_formatter() -> logging.Formatter:
    """One JSON object per line: timestamp, level, logger, message and the fields."""
    from pythonjsonlogger.json import JsonFormatter

    class _Json(JsonFormatter):
        def format(self, record: logging.LogRecord) -> str:
            # A lone surrogate (a handler's text) left raw went out as a `\ud800` escape
            # (the stream's backslashreplace): a lone surrogate again to a JSON reader.
            return _json_escaped(replaced_surrogates(redactor.text(super().format(record))))

    return _Json(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        json_ensure_ascii=False,
    )


# -- what Spool logs --------------------------------------------------------------------


def job_fields(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "tenant": job.tenant,
        "type": job.type,
        "queue": job.queue,
        "attempt": job.attempts,
        "max_attempts": job.max_attempts,
    }


def job_event(level: int, event: str, job: Job, message: str | None = None, **fields: Any) -> None:
    """One line for one job event on `spool.jobs`; never the payload or the result."""
    if jobs_log.isEnabledFor(level):
        job_line(level, event, job_fields(job), message, **fields)


def job_line(
    level: int, event: str, job: Mapping[str, Any], message: str | None = None, **fields: Any
) -> None:
    """job_event for a job known only by its `job_fields` (a store reaping it in SQL)."""
    if not jobs_log.isEnabledFor(level):
        return
    extra = {"event": event, **job}
    for k, v in fields.items():  # a loop, not a generator: one less frame a line
        if v is not None:
            extra[k] = v
    _emit(jobs_log, level, message or f"job {event}", extra)


def http_request(
    method: str, route: str, status: int, seconds: float, tenant: str | None, **fields: Any
) -> None:
    """One line per request: method, route template, status, duration, tenant (never a key).

    Probes and scrapes that succeed (/health, /metrics) are DEBUG; 5xx answers WARNING.
    """
    quiet = route in ("/health", "/metrics") and status < 400
    level = logging.WARNING if status >= 500 else logging.DEBUG if quiet else logging.INFO
    if not http_log.isEnabledFor(level):
        return
    extra = {
        "event": "http_request",
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "tenant": tenant,
    }
    for k, v in fields.items():
        if v is not None:
            extra[k] = _bounded(v)
    _emit(http_log, level, f"{method} {route} {status}", extra)


# A field of a request line is the client's text (a job id from the path): an id of
# 10,000 characters, under the 16 KiB request-head limit, made a 10 KB log line per
# request. Spool's ids are 34; the answer's own details keep 100.
MAX_FIELD_CHARS = 100


def _bounded(value: Any) -> Any:
    """A client-given text field cut to MAX_FIELD_CHARS, marked as cut."""
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return f"{value[:MAX_FIELD_CHARS]}...({len(value)} chars)"
    return value


def _emit(logger: logging.Logger, level: int, message: str, extra: dict[str, Any]) -> None:
    """Logger.log without its caller lookup (a stack walk, ~4 us a line): Spool's event
    lines name their event and never print a file or line number. The caller has
    checked the level.

    When Spool's own text handler is the only one the line would reach (`spool serve`,
    `spool worker`), the line is written straight to it: the record, the handler chain
    and the formatter's second pass over the fields cost ~25 us a line, most of an
    enqueue's time outside the store. What it writes is the same line, masked the same
    way (tests/test_log_fastline.py checks them against each other)."""
    handler = _sole_text_handler(logger, level)
    line = None
    if handler is not None and extra.keys().isdisjoint(_STANDARD):
        try:
            line = text_line(logger.name, level, message, extra)
        except Exception:  # a field that cannot be masked: the filter's own answer for it
            line = None
    if handler is None or line is None:
        logger.handle(logger.makeRecord(logger.name, level, "", 0, message, (), None, extra=extra))
        return
    held = getattr(_held, "lines", None)
    if held is not None:
        held.append((handler, logger, level, message, line))
        return
    _write(handler, [line], logger, level, message)


def _write(
    handler: _Stream, lines: list[str], logger: logging.Logger, level: int, message: str
) -> None:
    with handler.lock:  # type: ignore[union-attr]
        try:
            handler.write_lines(lines)
        except Exception:  # as Handler.emit: a broken stream is reported, never raised
            handler.handleError(logger.makeRecord(logger.name, level, "", 0, message, (), None))


# Lines held back by `together` in this thread: (handler, logger, level, message, line).
_held = threading.local()


@contextmanager
def together() -> Iterator[None]:
    """Spool's lines logged in this block reach its text handler in one write at the end
    (a batch of enqueues: one write instead of one a job). Lines on any other path are
    written as they come, as ever; a nested block joins the outer one."""
    if getattr(_held, "lines", None) is not None:
        yield
        return
    lines: list[tuple[_Stream, logging.Logger, int, str, str]] = []
    _held.lines = lines
    try:
        yield
    finally:
        _held.lines = None
        while lines:  # in runs of one handler (there is only ever one, bar a reconfigure)
            handler, logger, level, message, _ = lines[0]
            run = 1
            while run < len(lines) and lines[run][0] is handler:
                run += 1
            _write(handler, [entry[4] for entry in lines[:run]], logger, level, message)
            del lines[:run]


def _sole_text_handler(logger: logging.Logger, level: int) -> _Stream | None:
    """Spool's text handler, when it is the only handler from `logger` up to the root,
    with no filter but the redacting one, no logger filter on the way, and records made
    by logging's own factory (a custom one may add fields the formatter would print)."""
    if logger.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    node: logging.Logger | None = logger
    while node is not None:
        handlers = node.handlers
        if handlers:
            if node.parent is not None or len(handlers) != 1:
                return None
            handler = handlers[0]
            if (
                type(handler) is _Stream
                and type(handler.formatter) is TextFormatter
                and handler.filters == [_filter]
                and handler.level <= level
            ):
                return handler
            return None
        if not node.propagate:
            return None
        node = node.parent
    return None


# A text line's `<second>` prefix, remembered for the second it was made in.
_stamp: tuple[int, str] = (-1, "")


def _utc_stamp(second: int, millis: int) -> str:
    """`2025-06-01T12:00:00.123Z`: one strftime a second, not one a line."""
    global _stamp
    stamp = _stamp  # one read: another thread may move it on to the next second
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    if 0 <= millis < 1000:  # a float's rounding may give 1000: written as it comes
        return stamp[1] + _MILLIS[millis]
    return f"{stamp[1]}.{millis:03d}Z"


# `.000Z` ... `.999Z`: a format spec parsed a line cost more than the rest of the stamp.
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


# `key=value` pieces of short text fields as text_line writes them (masked, quoted),
# with the redactor's token for the secrets they were masked under: a line's event,
# method, route, tenant and type recur on every line, and each piece took a masking
# lookup and a quoting search. Each is kept with its verdict from redactor.leaves
# (True: nothing in it could be masked), and so is a line's head (level, logger,
# message) under the key (logger, level, message). A new token (secrets added) starts
# a new dict.
PIECES_UP_TO = 64
PIECES = 4096
_Kept = dict[tuple[Any, ...], tuple[str, bool]]
_pieces: tuple[object, _Kept] = (None, {})


def _kept_pieces() -> tuple[object, _Kept]:
    """The redactor's token for its present secrets, and the pieces kept under it."""
    global _pieces
    token = redactor.secrets_token()
    made_under, pieces = _pieces  # one read: another thread may replace it
    if made_under is not token:
        pieces = {}
        _pieces = (token, pieces)
    return token, pieces


def _keep(pieces: _Kept, key: tuple[Any, ...], piece: str) -> tuple[str, bool]:
    kept = (piece, redactor.leaves(piece))
    if len(pieces) >= PIECES:
        pieces.clear()
    pieces[key] = kept
    return kept


def _text_piece(key: str, value: str) -> str:
    return _piece(_kept_pieces()[1], key, value)[0]


def _piece(pieces: _Kept, key: str, value: str | int) -> tuple[str, bool]:
    """The piece `key=value` for a text or int value (never a bool: True == 1), and
    whether it is clean. A text and an int never share a key ("1" != 1)."""
    kept = pieces.get((key, value))
    if kept is not None:
        return kept
    if isinstance(value, int):  # the caller passes no bool
        return _keep(pieces, (key, value), f"{key}={value}")
    if len(value) <= PIECES_UP_TO and value and _ID_CHARS.issuperset(value):
        kept = _id_piece(pieces, key, value)
        if kept is not None:
            return kept
    piece = f"{key}={_text_value(redactor.text(value))}"
    if len(value) > PIECES_UP_TO:
        return piece, False  # not kept (memory), nor looked at: the whole line's pass
    return _keep(pieces, (key, value), piece)


# A job id's characters ("j_" and hex digits; lease tokens' too). A text of these alone
# holds no shape word (each word has a character outside them: tests/test_log_id_piece.py
# checks), no separator _SEPARATOR looks for and nothing _NEEDS_QUOTES quotes, and no
# shape word spans the `=` a piece joins key and value with (none holds one).
_ID_CHARS = frozenset("0123456789abcdefj_")


def _id_piece(pieces: _Kept, key: str, value: str) -> tuple[str, bool] | None:
    """The piece of a new job id (every enqueue's line has one), with one search for the
    secrets where the general way masked the value (a search and a shape test), quoted
    it, and looked at the piece again (another search and a shape test). When no secret
    occurs in `key=value`, none occurs in the value, so masking leaves it as it is, as
    quoting does (_ID_CHARS): the piece is `key=value`, clean unless its key holds a
    shape word. A piece holding a secret takes the general way (None)."""
    piece = f"{key}={value}"
    if redactor.finds_secret(piece):
        return None
    kept = (piece, _shape_free(pieces, key))
    if len(pieces) >= PIECES:
        pieces.clear()
    pieces[(key, value)] = kept
    return kept


def _shape_free(pieces: _Kept, key: str) -> bool:
    """No shape word in `key` (kept under the key `(key,)`)."""
    kept = pieces.get((key,))
    if kept is None:
        kept = (key, not has_shape_word(key))
        if len(pieces) >= PIECES:
            pieces.clear()
        pieces[(key,)] = kept
    return kept[1]


def _head(pieces: _Kept, name: str, level: int, message: str) -> tuple[str, bool]:
    """`LEVEL logger: message` (the message masked and on one line), and whether it is clean."""
    kept = pieces.get((name, level, message))
    if kept is not None:
        return kept
    head = f"{logging.getLevelName(level)} {name}: {redactor.text(one_line(message))}"
    if len(message) > PIECES_UP_TO:
        return head, False
    return _keep(pieces, (name, level, message), head)


def text_line(name: str, level: int, message: str, extra: Mapping[str, Any]) -> str:
    """The line TextFormatter writes for a record of these fields after the redacting
    filter has run on it: time, level, logger, message and the key=value pairs.

    TextFormatter masks the finished line once more as a whole. That pass finds
    something only where a secret or a shape spans the parts the line joins with
    spaces, or sits in a part no field's masking saw (a key, the level, the stamp).
    When no configured secret holds a space, neither can span a join
    (Redactor.spans_spaces); so when every part is clean on its own (the kept parts
    carry their verdict, the rest are looked at here together), the line is what
    the pass would leave, and the pass (two fifths of this function's cost) is
    skipped. Secrets added meanwhile (a new token) take the pass, as before."""
    now = time.time()
    second = int(now)
    token, pieces = _kept_pieces()
    head, clean = _head(pieces, name, level, message)
    stamp = _utc_stamp(second, int((now - second) * 1000))
    parts = [stamp, head]
    # Parts looked at here for secrets only: a stamp (digits, "-", "T", ":", ".", "Z")
    # and a float's digits cannot make any shape word (SHAPE_WORDS each hold another
    # character), nor can one run across a float piece's "=" (none holds "=").
    unsure = [stamp]
    for key, value in extra.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str or kind is int:  # ints too (a status, an attempt): they recur
            # _piece's first step here: a kept piece (most of a line's) costs no frame
            kept = pieces.get((key, value))
            piece, ok = kept if kept is not None else _piece(pieces, key, value)
            parts.append(piece)
            clean = clean and ok
            continue
        if kind is float:  # a duration: it seldom recurs
            piece = f"{key}={value:g}"  # as _text_value writes a float
            parts.append(piece)
            unsure.append(piece)
            clean = clean and _shape_free(pieces, key)
            continue
        if kind not in _PLAIN:
            value = redactor.value(value)
        piece = f"{key}={_text_value(value)}"
        parts.append(piece)
        clean = clean and redactor.leaves(piece)
    request_id = None if _request_id is None else _invocation_id()  # no frame outside one
    if request_id is not None and "aws_request_id" not in extra:
        piece = f"aws_request_id={_text_value(request_id)}"
        parts.append(piece)
        clean = clean and redactor.leaves(piece)
    line = " ".join(parts)
    if (
        clean
        and not redactor.spans_spaces()
        and not redactor.finds_secret(" ".join(unsure))
        and redactor.secrets_token() is token  # the verdicts were made under these secrets
    ):
        return line
    return redactor.text(line)


def payload_text(payload: Any) -> str:
    """What a job's tenant sent, as text to look for secrets in (Redactor.text_beside)."""
    try:
        return json.dumps(payload, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # a payload model's own types: its text will do
        return str(payload)


class _ValidText(logging.Filter):
    """A handler's line with each lone surrogate made U+FFFD, before any log handler
    sees it: its message, arguments and the exception it logs are the handler's own
    text. Only the JSON format cleaned it, so every other handler (an app's UTF-8 file,
    a collector, pytest's capture) got the raw surrogate, and a strict UTF-8 writer
    failed on it and lost the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # logging reports a bad format itself, as it always has
            return True
        if not is_utf8(text):
            record.msg, record.args = replaced_surrogates(text), None
        if record.exc_info and record.exc_text is None:
            told = logging.Formatter().formatException(record.exc_info)
            if not is_utf8(told):
                record.exc_text = replaced_surrogates(told)  # what every Formatter prints
        return True


_VALID_TEXT = _ValidText()


class JobLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A handler's logger (`ctx.log`): every line carries the job id, attempt, type,
    queue and tenant, and the last SPOOL_LOG_TAIL_LINES lines (INFO and up, or DEBUG
    when enabled) are kept for the attempt's record, redacted like every line."""

    def __init__(self, job: Job, keep: int | None = None) -> None:
        fields = job_fields(job)
        del fields["max_attempts"]
        super().__init__(logging.getLogger(HANDLER_LOGGER), fields)
        self.logger.addFilter(_VALID_TEXT)  # once: a logger keeps one of each filter
        self._tail: deque[str] = deque(maxlen=tail_lines() if keep is None else keep)
        self._tail_lock = threading.Lock()
        self._payload = job.payload

    def __call__(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """`ctx.log("sent %s", to)`: an INFO line. Being a logger, it was called as a
        function first by most who met it, and that TypeError failed every attempt."""
        self.log(logging.INFO, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**dict(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self._tail.maxlen and level >= min(logging.INFO, self.logger.getEffectiveLevel()):
            self._keep(level, msg, args, kwargs.get("exc_info"))
        super().log(level, msg, *args, **kwargs)

    def _keep(self, level: int, msg: Any, args: tuple[Any, ...], exc_info: Any) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = f"{msg!s} {args!r}"
        if exc_info:
            exc = sys.exc_info()[1] if exc_info is True else exc_info
            if isinstance(exc, tuple):
                exc = exc[1]
            if isinstance(exc, BaseException):
                text += f" ({type(exc).__name__}: {exc})"
        # The tail goes back to the job's tenant: secrets their own payload holds are
        # left as they sent them (see Redactor.text_beside), so no `***` tells which
        # of their guesses is a key.
        line = redactor.text_beside(f"{logging.getLevelName(level)} {text}", self._sent)
        line = line[:TAIL_LINE_CHARS]
        with self._tail_lock:
            self._tail.append(line)

    def _sent(self) -> str:
        return payload_text(self._payload)

    def tail(self) -> tuple[str, ...]:
        with self._tail_lock:
            return tuple(self._tail)
