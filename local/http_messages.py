"""waitress's own words for a request it cannot parse, said so a client can act.

waitress refuses a malformed request before Spool sees it, with terse reasons
("Bad URI", "Start line is invalid", "Invalid header"): true, but a person who
typed `curl localhost:8000/ui/api/jobs?find=café` cannot tell from "Bad URI" that
curl sent the é as raw bytes and the fix is to percent-encode it. Every other
refusal of Spool's says what to send instead; these now do too. The status each
one had stays as it was (400, or 501 for a coding waitress does not implement).
local/http_guard.py's render_error asks `explain` for the message.
"""

from __future__ import annotations

from chalicelib.api.http import (
    INVALID_HEADER,
    INVALID_LENGTH,
    INVALID_START_LINE,
    NON_ASCII_TARGET,
    method_not_upper,
)

# waitress's message (the whole text) -> what the client should send instead.
_EXACT = {
    "Bad URI": NON_ASCII_TARGET,
    "Start line is invalid": INVALID_START_LINE,
    # app.py answers a header value holding a control character, which an API Gateway
    # event can carry, in the same words (chalicelib/api/gateway_event.py).
    "Invalid header": INVALID_HEADER,
    "HTTP message header invalid": (
        "the request head is malformed: send a request line, then one `Name: value` "
        "line per header, each ending with CRLF, then an empty line"
    ),
    "Content-Length is invalid": INVALID_LENGTH,
    "Invalid chunk size": (
        "a chunk-size line of the chunked body is not a size in hex digits: send each "
        "chunk as its size in hex, CRLF, the bytes, CRLF, and end with 0 CRLF CRLF "
        "(or send the body with Content-Length instead)"
    ),
    "Invalid chunk extension": (
        "a chunk extension of the chunked body is malformed: send chunk-size lines "
        "without extensions (just the size in hex), or the body with Content-Length"
    ),
    "Transfer-Encoding requested is not supported.": (
        "this Transfer-Encoding is not supported: send the body with Content-Length, "
        "or chunked alone (Transfer-Encoding: chunked)"
    ),
}

_METHOD_PREFIX = 'Malformed HTTP method "'


def explain(message: str) -> str:
    """What to tell the client for waitress's `message`: a sentence that says what
    to send instead where waitress's own says only what was wrong; any message not
    known here is returned as it is (Spool's own refusals already say what to do)."""
    known = _EXACT.get(message)
    if known is not None:
        return known
    if message.startswith(_METHOD_PREFIX) and message.endswith('"'):
        method = message[len(_METHOD_PREFIX) : -1]
        return method_not_upper(method)
    return message
