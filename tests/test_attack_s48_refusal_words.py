"""The words of a refused request head have one source, whichever edge refuses it.

Was: chalicelib/chalice_local_http.py kept its own copies of `spool serve`'s
refusals (a header line that is not `Name: value`, line folding, a Content-Length
that is not one size, Content-Length beside chunked), and local/http_guard.py and
http_messages.py kept theirs; a test compared two of the four texts. A wording
changed on one edge drifted from the other unseen (app.py's Lambda refusal already
read http.INVALID_HEADER). Now each text is one object in chalicelib/api/http.py
(chalicelib ships to Lambda; local/ does not, so local/ imports it from there), and
every edge's refusal is that object.
"""

from __future__ import annotations

from email.message import Message

from chalicelib import chalice_local_http as chalice_local
from chalicelib.api import http as api_http
from local import http_guard
from local.http_messages import explain


def _head(lines: str) -> Message:
    """Python's parse of a request head, as chalice's handler makes it."""
    import http.client
    import io

    return http.client.parse_headers(io.BytesIO(lines.encode("latin-1") + b"\r\n"))


def test_chalice_local_refuses_a_head_in_the_shared_words() -> None:
    folded = chalice_local.head_refusal(_head("X-Note: a\r\n folded\r\n"))
    bad_line = chalice_local.head_refusal(_head("X-Note : y\r\nHost: h\r\n"))
    assert folded is not None and bad_line is not None
    assert folded[2] is api_http.FOLDED_HEADER
    assert bad_line[2] is api_http.INVALID_HEADER


def test_chalice_local_refuses_framing_in_the_shared_words() -> None:
    twice = chalice_local.framing_refusal(["2", "2"], [], 100)
    both = chalice_local.framing_refusal(["2"], ["chunked"], 100)
    big = chalice_local.framing_refusal(["101"], [], 100)
    assert twice is not None and both is not None and big is not None
    assert twice[2] is api_http.INVALID_LENGTH
    assert both[2] is api_http.LENGTH_AND_CHUNKED
    assert big[2] == api_http.body_too_large(101, 100)


def test_spool_serve_refuses_in_the_same_words() -> None:
    assert explain("Invalid header") is api_http.INVALID_HEADER
    assert explain("Content-Length is invalid") is api_http.INVALID_LENGTH
    assert http_guard.OBS_FOLD is api_http.FOLDED_HEADER
    assert http_guard.AMBIGUOUS_LENGTH.body is api_http.LENGTH_AND_CHUNKED
    assert http_guard.too_large(100, 101).body == api_http.body_too_large(101, 100)
