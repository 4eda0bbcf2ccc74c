"""waitress, hardened against clients that hold connections or send too much.

waitress's own defaults let 100 idle sockets fill every slot for two minutes,
let one byte every few seconds hold a slot forever, and buffer a body up to
its size limit before the app can refuse it. Here, per connection:

- a request must arrive whole (head and body) within `request_timeout` of its
  first byte, or it is answered 408 and the connection closed; an idle
  keep-alive connection lasts `idle_timeout`; a finished response the client
  does not take within `send_timeout` is dropped, and so is one still being
  written past waitress's 16 MiB buffer mark (its thread waits for the client
  to read: a client that pipelines big answers and never reads would hold a
  pool thread for as long as it stays connected);
- a Content-Length over the body limit is answered 413 as soon as the head is
  read, with nothing of the body buffered (and no `100 Continue`); a chunked
  body is cut off at the limit, or as soon as a chunk's size line announces more;
- after such a refusal the server stops sending, reads and discards what the
  client still sends for `linger_seconds` (at most LINGER_MAX_BYTES), then
  closes: the client gets to read its 413 instead of a connection reset;
- a client that sends end-of-file (shutdown(SHUT_WR)) after whole requests is
  still sent their answers, then the connection closes (waitress closed at once);
  TCP does not tell a half-close from a hang-up, so a long-poll answers at once;
- at `max_connections` the longest-idle connection that has no request being
  served is closed to admit the new one (then the oldest request still arriving;
  a client that has just connected only last), so a full server still answers.

An HTTP/1.1 request without a Host header, or with more than one, is answered 400
and the connection closed (RFC 9112 3.2; HTTP/1.0 needs none). HTTP/1.2 .. 1.9 is
read as HTTP/1.1 (RFC 9112 2.3), another major than 1 answered 505.
Ambiguous framing is answered 400 and the connection closed: Content-Length
beside Transfer-Encoding, Transfer-Encoding under HTTP/1.0, a Transfer-Encoding
other than one `chunked` (`chunked, chunked`), bare LF or CR line ends, folded
header lines. Errors waitress itself produces come in Spool's JSON error shape.
"""

from __future__ import annotations

import errno
import heapq
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.receiver import ChunkedReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import Error, InternalServerError, RequestEntityTooLarge

from chalicelib.api.errors import error_body
from chalicelib.api.http import (
    API_HEADERS,
    FOLDED_HEADER,
    LENGTH_AND_CHUNKED,
    body_too_large,
    dumps,
    head_too_large,
    under_ui,
)
from chalicelib.http_timeouts import request_timed_out
from chalicelib.ui.page import SECURITY_HEADERS
from local.http_limits import HttpLimits
from local.http_messages import explain

log = logging.getLogger("spool.http")

# What a refused client may still send (and we read and drop) before a reset.
LINGER_MAX_BYTES = 10 * 1024 * 1024
# Chunk-size lines and trailers are framing: allow this much beyond the body.
CHUNK_FRAMING_ALLOWANCE = 64 * 1024
# After accept() fails for want of file descriptors, wait this long to retry.
ACCEPT_PAUSE = 0.25
ACCEPT_BATCH = 64

_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "payload_too_large",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    505: "http_version_not_supported",
}


_API_HEAD = "".join(f"{name}: {value}\r\n" for name, value in API_HEADERS.items())
# Under /ui a refusal is an answer of the dashboard's origin: it carries the page's
# CSP and framing rules as every other dashboard answer does (ui_routes.ERROR_HEADERS).
_UI_HEADERS = {**API_HEADERS, **SECURITY_HEADERS}
_UI_HEAD = "".join(f"{name}: {value}\r\n" for name, value in _UI_HEADERS.items())
# How much of a request's first bytes is kept to read its target from (the request
# line is at most the head's limit, but a path that long is not the dashboard's).
_START_BYTES = 512


class SpoolHttpError(Error):
    """A refusal made by the server before the app sees the request."""

    def __init__(self, status: int, reason: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = status
        self.reason = reason
        self.details = details


def render_error(error: Error) -> tuple[str, bytes]:
    """Any waitress error as a status line and a body in Spool's error shape."""
    status = int(error.code)
    details = getattr(error, "details", None)
    if isinstance(error, InternalServerError) or (status >= 500 and status not in (501, 505)):
        message = "an internal error occurred"  # waitress would put a traceback here
    elif status == 431:
        # waitress says "exceeds max_header of N": the client cannot tell that a long
        # URL (a path id, a query string) counts too, and is what it most often sent.
        found = re.search(r"\d+", str(error.body))
        limit = int(found.group()) if found else None
        message = head_too_large(limit) if limit is not None else str(error.body)
        details = {"limit": limit}
    else:
        message = explain(str(error.body))  # waitress's terse reasons, said actionably
    body = dumps(error_body(_CODES.get(status, "bad_request"), message, details))
    return f"{status} {error.reason}", body.encode("utf-8")


def too_large(limit: int, size: int | None = None) -> SpoolHttpError:
    if size is None:
        message = f"request body exceeds the limit of {limit} bytes"
        details: dict[str, int] = {"limit": limit}
    else:  # the app's own wording (parse_json's)
        message = body_too_large(size, limit)
        details = {"limit": limit, "size": size}
    return SpoolHttpError(413, "Payload Too Large", message, details)


AMBIGUOUS_LENGTH = SpoolHttpError(400, "Bad Request", LENGTH_AND_CHUNKED)

# waitress reads Transfer-Encoding in HTTP/1.1 only: an HTTP/1.0 request kept alive
# with one had an empty body, and its chunked body was read as the next request.
TRANSFER_ENCODING_BEFORE_HTTP11 = SpoolHttpError(
    400,
    "Bad Request",
    "Transfer-Encoding needs HTTP/1.1: send an HTTP/1.0 body with Content-Length",
)


def version_not_supported(version: str) -> SpoolHttpError:
    """505 for a request line's HTTP version of another major than 1: waitress reads
    any DIGIT.DIGIT and served HTTP/2.0 or HTTP/9.9 as HTTP/1.0 (RFC 9110 15.6.6)."""
    return SpoolHttpError(
        505,
        "HTTP Version Not Supported",
        f"this server speaks HTTP/1.1 (and HTTP/1.0), not HTTP/{version}: "
        "send the request as HTTP/1.1",
    )


BARE_LF = SpoolHttpError(
    400,
    "Bad Request",
    "a line of the request head ends with LF or CR alone: HTTP ends lines with CRLF",
)
BARE_LF_IN_CHUNKS = SpoolHttpError(
    400,
    "Bad Request",
    "a chunk-size line or trailer of the chunked body ends with LF or CR alone: "
    "HTTP ends lines with CRLF",
)
# A header line that starts with a space or tab continues the one before (obs-fold).
_OBS_FOLD = re.compile(rb"\r\n[ \t]")
OBS_FOLD = FOLDED_HEADER
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:", re.IGNORECASE)
_HOST = re.compile(rb"\r\nhost:", re.IGNORECASE)
# Every Transfer-Encoding line's value (obs-fold is refused first, so a line is whole).
_TRANSFER_ENCODING_VALUE = re.compile(rb"\r\ntransfer-encoding:([^\r\n]*)", re.IGNORECASE)
# A request line ending in a higher minor version of HTTP/1: group 1 is the line up to
# the minor digit, group 2 the blanks after it (waitress strips them).
_HIGHER_MINOR = re.compile(rb"(.* HTTP/1\.)[2-9](\s*)", re.DOTALL)
# A request line of HTTP/1 as sent (group 1: the minor digit), whatever else is in it.
_HTTP1_LINE = re.compile(rb".* HTTP/1\.([0-9])\s*", re.DOTALL)
# LF without its CR, or CR followed by anything but LF (a CR last in what has arrived
# may still get its LF in the next read).
_BARE_LF = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")


class LineCheckedChunkedReceiver(ChunkedReceiver):
    """waitress's chunked-body reader, fed one chunk-size line at a time so that each
    line is checked for a bare LF or CR once it is whole (`bare_line_end`).

    waitress matches a size line with `^HEXDIG+$` (and its extensions likewise), and
    `$` also matches before a final LF: `21\\n\\r\\n` was a chunk of 0x21 bytes where a
    proxy that ends the line at the LF reads the chunk from one byte earlier. A line
    still arriving is checked as it gathers (GuardedParser._received_body)."""

    bare_line_end = False

    def received(self, s: bytes) -> int:
        done = 0
        while done < len(s) and not (self.completed or self.error or self.bare_line_end):
            if self.all_chunks_received:  # the trailer: the parser checks it
                return done + int(super().received(s[done:]))
            if self.chunk_remainder:
                end = done + self.chunk_remainder
            elif self.validate_chunk_end:
                end = done + 2 - len(self.chunk_end)
            else:  # a chunk-size line: up to its CRLF, or all there is
                if self.control_line.endswith(b"\r") and s[done : done + 1] == b"\n":
                    end = done + 1
                else:
                    crlf = s.find(b"\r\n", done)
                    end = len(s) if crlf < 0 else crlf + 2
                if _BARE_LF.search(self.control_line + s[done:end]) is not None:
                    self.bare_line_end = True
                    break
            piece = s[done:end]
            super().received(piece)  # a piece within one part is taken whole
            done += len(piece)
        return len(s) if self.error or self.bare_line_end else done


class GuardedParser(HTTPRequestParser):
    """waitress's parser with Spool's body limit applied before buffering."""

    limits = HttpLimits()

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started: float | None = None  # first byte that is not a blank line
        self.raw_body_bytes = 0
        self.transfer_encoding = False  # the head names one, whatever its value
        self._start = b""  # the request's first bytes, as sent

    @property
    def under_ui(self) -> bool:
        """The request line names a dashboard path (/ui...), read from the bytes as sent:
        a head refused before it was parsed (431, a bad line) has no path of its own."""
        text = self._start.lstrip(b"\r\n").split(b"\n", 1)[0]
        parts = text.split(b" ")
        if len(parts) < 2:
            return False
        target = parts[1]
        if not target.startswith(b"/"):  # absolute-form: http://host/ui
            scheme, _, rest = target.partition(b"://")
            target = b"/" + rest.partition(b"/")[2] if scheme and rest else b""
        return under_ui(target.decode("latin-1"))  # `//ui`, `/%75i`: as the router reads it

    def parse_header(self, header_plus: bytes) -> None:
        # waitress joins a folded line to the one before: `Transfer-Encoding:` folded
        # onto a second line framed the body as chunked where a proxy that reads the
        # lines apart frames it by nothing. RFC 9112 5.2 lets a server refuse it.
        if _OBS_FOLD.search(header_plus) is not None:
            raise ParsingError(OBS_FOLD)
        # A head that arrives whole is read here, not in received: waitress splits the
        # request line at the first CRLF and strips its end, a LF or CR before that CRLF
        # included, so `GET / HTTP/1.1\n\r\n` was a request where a proxy that ends a
        # line at LF sees the end of the head (and what follows as a body).
        if _BARE_LF.search(header_plus) is not None:
            raise ParsingError(BARE_LF.body)
        self.transfer_encoding = _TRANSFER_ENCODING.search(header_plus) is not None
        if self.transfer_encoding and _CONTENT_LENGTH.search(header_plus) is None:
            _check_transfer_encoding(header_plus)  # beside Content-Length: AMBIGUOUS_LENGTH
        super().parse_header(_as_highest_minor(header_plus))
        if self.version == "1.1":
            _check_host(header_plus)
        if self.chunked and isinstance(self.body_rcv, ChunkedReceiver):
            self.body_rcv = LineCheckedChunkedReceiver(self.body_rcv.buf)

    def received(self, data: bytes) -> int:
        if self.completed:
            return 0
        if len(self._start) < _START_BYTES:
            self._start += data[: _START_BYTES - len(self._start)]
        if self.started is None and data.strip():
            self.started = time.monotonic()
        if self.body_rcv is None:
            consumed = super().received(data)
            waiting = not (self.completed or self.headers_finished)
            if waiting and _BARE_LF.search(self.header_plus.lstrip()) is not None:
                # waitress waits for CRLF CRLF to end a head, so one whose lines end with a
                # bare LF (or CR) would wait out the request timeout; its 400 for a bare LF
                # or CR inside a finished head is the answer here too, at once.
                self.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress before its own 431
                self._refuse(BARE_LF)
                self._answer_as_asked()
                return len(data)
            limit = self.limits.max_body_bytes
            if (
                self.headers_finished
                and self.version.partition(".")[0] != "1"
                and self.error is None
            ):
                # Before anything else is read of it: a request in another protocol.
                self._refuse(version_not_supported(self.version))
            elif (
                self.headers_finished
                and self.version != "1.1"
                and "TRANSFER_ENCODING" in self.headers
                and self.error is None
            ):
                # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding is faulty framing (a proxy
                # that goes by the header sees another request boundary); refused, closed.
                self._refuse(TRANSFER_ENCODING_BEFORE_HTTP11)
            elif (
                self.headers_finished
                and (self.chunked or (self.transfer_encoding and self.error is None))
                and "CONTENT_LENGTH" in self.headers
            ):
                # Two framings for one body: a proxy in front that goes by the other one
                # would see a different request boundary (request smuggling). RFC 9112
                # 6.1 lets a server refuse it; a client never needs to send both. That
                # holds for a Transfer-Encoding naming no coding (waitress ignores it; a
                # proxy may let it override Content-Length, RFC 9112 6.3).
                self._refuse(AMBIGUOUS_LENGTH)
            elif (
                self.headers_finished
                and not self.chunked
                and self.content_length > limit
                and (self.error is None or isinstance(self.error, RequestEntityTooLarge))
            ):  # waitress's own check (its backstop) words it differently
                self._refuse(too_large(limit, self.content_length))
            if self.error is not None:
                self.expect_continue = False  # never invite a body we refuse
                self._answer_as_asked()
                return len(data)  # what follows a refused head is not a request
            return consumed
        return self._received_body(data)

    def _received_body(self, data: bytes) -> int:
        receiver = self.body_rcv
        assert receiver is not None
        consumed = int(receiver.received(data))
        self.raw_body_bytes += consumed
        # waitress ends a chunk-size line and the trailer at CRLF only: one of bare LFs
        # waited out the request timeout (as a head of them did, see received).
        lines = (getattr(receiver, "control_line", b""), getattr(receiver, "trailer", b""))
        if getattr(receiver, "bare_line_end", False) or any(
            line and _BARE_LF.search(line) is not None for line in lines
        ):
            self._refuse(BARE_LF_IN_CHUNKS)
            return len(data)
        limit = self.limits.max_body_bytes
        # A chunk's size line says how much is coming: a chunk that cannot fit is refused
        # when it is announced, not after the client has been waited on to send it.
        announced = len(receiver) + int(getattr(receiver, "chunk_remainder", 0))
        if announced > limit or self.raw_body_bytes > 2 * limit + CHUNK_FRAMING_ALLOWANCE:
            self._refuse(too_large(limit))
            return len(data)
        if receiver.error:
            self.error = receiver.error
            self.completed = True
        elif receiver.completed:
            self.completed = True
            if self.chunked:  # as waitress does: the app sees a plain body
                headers: dict[str, str] = self.headers  # type: ignore[assignment]
                headers["CONTENT_LENGTH"] = str(len(receiver))
        return consumed

    def _answer_as_asked(self) -> None:
        """A refused head is answered in the version its request line asks for (RFC
        9110 6.2), read from the bytes as sent: one refused before waitress read that
        line (a 431, a folded line, a faulty Transfer-Encoding) kept waitress's
        default, and an HTTP/1.1 client was answered as HTTP/1.0."""
        line = self._start.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
        found = _HTTP1_LINE.fullmatch(line)
        if found is not None:
            self.version = "1.0" if found.group(1) == b"0" else "1.1"

    def _refuse(self, error: Error) -> None:
        self.error = error
        self.completed = True
        self.expect_continue = False
        self.close()  # drop whatever of the body was buffered, now


def _as_highest_minor(header_plus: bytes) -> bytes:
    """The head with a request line's `HTTP/1.2` .. `HTTP/1.9` read as `HTTP/1.1`.

    waitress serves every version but 1.1 as 1.0: HTTP/1.2 got no keep-alive, its
    chunked body was refused and it needed no Host. RFC 9112 2.3 (RFC 9110 2.5): a
    higher minor version of a major the server speaks is treated as the highest minor
    it speaks, so such a request is HTTP/1.1 in everything (and answered as HTTP/1.1)."""
    line, crlf, rest = header_plus.partition(b"\r\n")
    if line.endswith((b" HTTP/1.1", b" HTTP/1.0")):
        return header_plus  # nearly every request: no regex run over its line
    found = _HIGHER_MINOR.fullmatch(line)
    if found is None:
        return header_plus
    return found.group(1) + b"1" + found.group(2) + crlf + rest


def _check_host(header_plus: bytes) -> None:
    """ParsingError (400, then close) unless an HTTP/1.1 head has one Host line.

    waitress served a request with none, and joined two into one value ("a, b"): a
    proxy in front may route by one Host while the app (links, the dashboard) reads
    another. RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request lacking
    Host or with more than one. HTTP/1.0 has no such rule, and stays served."""
    count = len(_HOST.findall(header_plus))
    if count == 1:
        return
    if count == 0:
        raise ParsingError(
            "an HTTP/1.1 request must carry a Host header, and this one has no Host header "
            "(RFC 9112 3.2): send `Host: <host>:<port>` as the address you connect to"
        )
    raise ParsingError(
        f"an HTTP/1.1 request must carry one Host header, and this one has the Host header "
        f"{count} times (RFC 9112 3.2): send it once"
    )


def _check_transfer_encoding(header_plus: bytes) -> None:
    """ParsingError (400, then close) unless the head's Transfer-Encoding is `chunked`
    exactly once, alone (any case, spaces around it allowed).

    waitress took `chunked, chunked` (or the header twice, which it joins into
    that), `chunked,` and `, chunked` as one chunked coding, and an empty value as
    none: a proxy in front may frame such a body otherwise, or refuse only some of
    them (request smuggling). RFC 9112 7.1 forbids chunked twice and 6.1 lets a
    server refuse framing it finds faulty. A list of codings none of which is
    chunked (`gzip`) stays waitress's 501: a coding it does not implement."""
    values = b",".join(_TRANSFER_ENCODING_VALUE.findall(header_plus))
    codings = [coding.strip(b" \t").lower() for coding in values.split(b",")]
    if codings == [b"chunked"]:
        return
    if all(codings) and b"chunked" not in codings:
        return  # unknown codings only: waitress answers 501
    shown = values.strip(b" \t").decode("latin-1")
    raise ParsingError(
        f"Transfer-Encoding must be chunked, once and alone, not {shown!r}: "
        "send the body chunked, or with Content-Length"
    )


class GuardedErrorTask(ErrorTask):
    """Errors answered by the server itself, in Spool's shape, then a lingering close."""

    def execute(self) -> None:
        request: Any = self.request  # the stubs type it as waitress's Error
        status, body = render_error(request.error)
        self.status = status
        # Every answer's headers (chalicelib/api/http.py), these too: no cache keeps a
        # refusal, and no browser reads one (it may quote the method or a header) as a page.
        under_ui = isinstance(request, GuardedParser) and request.under_ui
        self.response_headers = [
            *self.response_headers,
            ("Content-Type", "application/json"),
            *(_UI_HEADERS if under_ui else API_HEADERS).items(),
        ]
        self.set_close_on_finish()
        # An HTTP/1.0 client's `Connection: keep-alive` made waitress add "Connection:
        # Keep-Alive" beside the "close" above: this answer always closes, so say that only.
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            headers.pop("CONNECTION", None)
        self.content_length = len(body)
        channel = self.channel
        if isinstance(channel, GuardedChannel):
            channel.linger = True
        self.write(body)


# A new client that has not sent its request yet is spared eviction this long: long
# enough for any client to send a request head, short enough that silent sockets
# opened to fill the server soon count as idle.
NEWCOMER_GRACE = 1.0


class GuardedChannel(HTTPChannel):
    """One client connection, with its deadlines and a lingering close."""

    parser_class = GuardedParser
    error_task_class = GuardedErrorTask
    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.linger = False  # drain the client's input before closing
        self.draining_until: float | None = None
        self.drained = 0
        self.sending_since: float | None = None
        self.busy_until = time.monotonic()  # last time the server, not the client, held it up
        self.accepted_at = self.busy_until
        self.heard = False  # whether the client has sent a byte yet

    # -- lingering close ------------------------------------------------------

    def readable(self) -> bool:
        if self.draining_until is not None:
            return True
        if self.peer_done:  # end-of-file stays readable: the loop would spin on it
            return False
        return bool(super().readable())

    def writable(self) -> bool:
        if self.draining_until is not None:
            return bool(self.will_close)
        return bool(super().writable())

    def handle_read(self) -> None:
        if self.draining_until is None:
            self.heard = True
            self._read_request_bytes()
            return
        try:
            data = self.recv(64 * 1024)
        except OSError:
            data = b""
        self.drained += len(data)
        if not data or self.drained > LINGER_MAX_BYTES:
            self.close_now()

    # -- a client that half-closes ---------------------------------------------

    # The client sent end-of-file (shutdown(SHUT_WR), or a full close: TCP does not
    # tell them apart) after requests it is still owed answers to.
    peer_done = False

    def _read_request_bytes(self) -> None:
        """waitress's handle_read, but end-of-file after whole requests is not a close.

        waitress closed at once, dropping the answers owed (one still running, or
        written and not yet sent): a client that half-closes after its request, as
        `nc -N` and some HTTP/1.0 clients do, got nothing. Now those answers are sent,
        then the connection closes; nothing more is read from it."""
        try:
            assert self.socket is not None
            data = self.socket.recv(self.adj.recv_bytes)
        except (OSError, AssertionError):
            self.handle_close()  # as waitress: a reset or any socket error closes
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
            return
        raw: Any = self  # the stubs miss some of HTTPChannel's attributes
        with raw.requests_lock:
            owed = bool(self.requests) or bool(self.total_outbufs_len)
            if owed:
                self.peer_done = True
                if not self.requests:  # answered, not yet sent (on the loop thread)
                    self.close_when_flushed = True
        if not owed:
            self.handle_close()  # a client gone between requests, or mid-request

    def check_client_disconnected(self) -> bool:  # type: ignore[override]  # stubs: None
        """What a long-poll asks (`waitress.client_disconnected`): gone once its
        client sent end-of-file, so its wait answers at once and frees its slot."""
        return self.peer_done or not self.connected

    def handle_close(self) -> None:
        if self.linger and self.draining_until is None and self.connected and not self.will_drop:
            try:
                assert self.socket is not None
                self.socket.shutdown(socket.SHUT_WR)  # the client sees the response end
            except (OSError, AssertionError):
                pass
            else:
                self.will_close = False
                self.draining_until = time.monotonic() + self.limits.linger_seconds
                return
        self.close_now()

    will_drop = False  # close without lingering
    closed = False

    def close_now(self) -> None:
        """Close the socket and free every buffer this connection holds."""
        self.will_drop = True
        if self.closed:
            return
        self.closed = True
        raw: Any = self  # the stubs miss some of HTTPChannel's attributes
        with raw.requests_lock:
            partial, self.request = self.request, None
        if partial is not None:
            partial.close()
        super().handle_close()

    def service(self) -> None:
        super().service()
        self.busy_until = time.monotonic()
        if self.peer_done:
            raw: Any = self
            with raw.requests_lock:
                if not self.requests:  # the last answer owed: close once it is sent
                    self.close_when_flushed = True
            self.server.pull_trigger()

    def _flush_outbufs_below_high_watermark(self) -> None:
        """waitress makes a writer past 16 MiB of unsent answer wait for the loop to
        drain it. A request served inline runs on the loop's own thread: it must never
        wait (a client that does not read kept it there for as long as it stayed
        connected, and a stop never finished). Its answer is already in memory; the
        next pipelined request goes to a pool thread, which waits here instead."""
        if _serving_inline(self.server):
            return
        HTTPChannel._flush_outbufs_below_high_watermark(self)  # type: ignore[attr-defined]

    # -- deadlines (called from the server's loop thread) ---------------------

    def enforce_deadlines(self, now: float) -> None:
        """Close or answer this connection if it is past its deadline.

        The clocks run only while the client is the one holding things up:
        `busy_until` moves while the app serves a request or a response is being
        sent, and an idle connection's clock is not reset by stray bytes (blank
        lines between requests), only by a request served.
        """
        limits = self.limits
        if self.draining_until is not None:
            if now >= self.draining_until:
                self.will_drop = self.will_close = True
            return
        # The client holds things up when an answer waits for it to read: with no
        # request running, or past waitress's high-water mark, where the request's
        # thread itself waits for the client (write_soon) and the pool loses it.
        if self.total_outbufs_len and (
            not self.requests or self.total_outbufs_len > self.adj.outbuf_high_watermark
        ):
            if self.sending_since is None:
                self.sending_since = now
            elif now - self.sending_since >= limits.send_timeout:
                # Closed now, not marked: a mark is acted on once the socket turns
                # writable, which it never does for a client that does not read; and
                # closing wakes a thread waiting for the buffer to drain.
                self.close_now()
                return
            self.busy_until = now
            return
        self.sending_since = None
        if self.will_close or self.close_when_flushed:
            return
        if self.requests:  # the app is on it: the app's own limits apply
            self.busy_until = now
            return
        partial = self.request
        started = getattr(partial, "started", None)
        if started is not None:
            if now - max(started, self.busy_until) >= limits.request_timeout:
                self.time_out(partial)
        elif now - self.busy_until >= limits.idle_timeout:
            self.will_drop = self.will_close = True

    def time_out(self, partial: Any) -> None:
        """Answer 408 from the loop thread (no worker needed) and close after it."""
        seconds = self.limits.request_timeout
        error = SpoolHttpError(
            408,
            "Request Timeout",
            request_timed_out(seconds),
            {"timeout": seconds},
        )
        status, body = render_error(error)
        under_ui = isinstance(partial, GuardedParser) and partial.under_ui
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"{_UI_HEAD if under_ui else _API_HEAD}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        raw: Any = self
        with raw.requests_lock:
            if self.request is not partial or self.requests:
                return
            raw.request = None
            buffers: Any = partial
            buffers.close()
            with raw.outbuf_lock:
                self.outbufs[-1].append(head + body)
                self.total_outbufs_len += len(head) + len(body)
                self.current_outbuf_count += len(head) + len(body)
            self.close_when_flushed = True  # no lingering: this client sends slowly


class GuardedServer(TcpWSGIServer):
    """The listening socket: sweeps deadlines and keeps room for new clients."""

    channel_class = GuardedChannel

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        self.limits = limits
        self.next_sweep = 0.0
        self.accept_paused_until = 0.0
        self.evicted = 0
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        now = time.monotonic()
        if now >= self.next_sweep:
            self.next_sweep = now + self.limits.sweep_interval
            self.sweep(now)
        # At the cap too: handle_accept makes room for what is waiting, if anyone is.
        return bool(self.accepting) and now >= self.accept_paused_until

    def pull_trigger(self) -> None:
        if _serving_inline(self):
            return  # the loop to wake is this thread's, and it polls next
        super().pull_trigger()

    def channels(self) -> dict[int, Any]:
        """fd -> channel (waitress's stubs type this wrongly)."""
        raw: Any = self
        channels: dict[int, Any] = raw.active_channels
        return channels

    def maintenance(self, now: float) -> None:
        """waitress's idle sweep; sweep() does this and more."""

    def sweep(self, now: float) -> None:
        for channel in list(self.channels().values()):
            if isinstance(channel, GuardedChannel):
                channel.enforce_deadlines(now)

    def evict_one(self) -> bool:
        """Mark the first connection of eviction_order to close; False if every
        connection is busy."""
        victims = self.eviction_order(1)
        if not victims:
            return False
        self._close_for_room(victims[0])
        return True

    def eviction_order(self, count: int) -> list[Any]:
        """Up to `count` connections with no request being served, in the order they
        are closed to make room, found in one scan of every connection.

        The longest-idle go first, then the oldest requests still arriving, and a
        client accepted under NEWCOMER_GRACE ago that has not spoken yet only last:
        it counted as idle, so with every other slot held by a half-sent request (one
        client's doing, renewed each request timeout) each new client was the one
        closed, and nobody else was ever served."""
        now = time.monotonic()
        idle: list[tuple[float, int, Any]] = []
        receiving: list[tuple[float, int, Any]] = []
        fresh: list[tuple[float, int, Any]] = []
        for fd, channel in self.channels().items():
            if (
                channel.will_close
                or channel.close_when_flushed
                or channel.requests
                or channel.total_outbufs_len
                or getattr(channel, "draining_until", None) is not None
            ):
                continue
            started = getattr(channel.request, "started", None)
            if started is not None:
                receiving.append((started, fd, channel))
            elif not getattr(channel, "heard", True) and now - channel.accepted_at < NEWCOMER_GRACE:
                fresh.append((channel.accepted_at, fd, channel))
            else:
                idle.append((getattr(channel, "busy_until", 0.0), fd, channel))
        victims: list[Any] = []
        for pool in (idle, receiving, fresh):
            left = count - len(victims)
            if left <= 0:
                break
            victims.extend(channel for _, _, channel in heapq.nsmallest(left, pool))
        return victims

    def _close_for_room(self, victim: Any) -> None:
        """Mark `victim` to close at the loop's next turn, without lingering (closing it
        now could hand its descriptor number to a socket accepted in this same turn,
        which would then be dispatched the closed one's poll events)."""
        victim.will_drop = victim.will_close = True
        self.evicted += 1
        if self.evicted in (1, 100) or self.evicted % 10_000 == 0:
            log.warning(
                "connection limit (%d) reached: closed %d idle connection(s) to admit new ones",
                self.limits.max_connections,
                self.evicted,
            )

    def handle_accept(self) -> None:
        """Accept what is waiting (up to ACCEPT_BATCH): one per loop turn would make
        admitting N clients cost N turns over every open connection.

        At the cap, each client accepted marks one connection to close (eviction_order,
        one scan for the whole batch). Making room for one client a turn and accepting
        it at the next made N clients waiting in the backlog cost 2N turns: with
        10,000 connections held, a /health behind 300 waiting clients took 20 s. With
        nothing to close (every connection busy) new clients wait in the backlog, and
        the listening socket is left alone for ACCEPT_PAUSE rather than spun on."""
        room = self.limits.max_connections - len(self.channels())
        victims: Iterator[Any] | None = None
        for _ in range(ACCEPT_BATCH):
            if room > 0:
                if not self.accept_one():
                    return
                room -= 1
                continue
            if victims is None:
                order = self.eviction_order(ACCEPT_BATCH)
                if not order:
                    self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                    return
                victims = iter(order)
            victim = next(victims, None)
            if victim is None or not self.accept_one():
                return
            self._close_for_room(victim)

    def accept_one(self) -> bool:
        try:
            pair = self.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors despite the cap (something else holds them):
                # make room if any connection is idle, else wait a moment rather
                # than spin on a listening socket that stays readable.
                if not self.evict_one():
                    self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                log.warning("accept() failed: %s", exc)
            return False
        if pair is None:
            return False
        conn, addr = pair
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return True
        raw: Any = self
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=raw._map)
        return True


def _serving_inline(server: Any) -> bool:
    serving_inline = getattr(server.task_dispatcher, "serving_inline", None)
    return serving_inline is not None and bool(serving_inline())


def guarded_classes(limits: HttpLimits) -> tuple[type[GuardedServer], type[GuardedChannel]]:
    """Server and channel classes bound to these limits (one set per Server)."""
    parser = type("BoundParser", (GuardedParser,), {"limits": limits})
    channel = type("BoundChannel", (GuardedChannel,), {"limits": limits, "parser_class": parser})
    server = type("BoundServer", (GuardedServer,), {"channel_class": channel})
    return server, channel
