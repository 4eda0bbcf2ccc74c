"""http_request and a response whose charset names a Python codec that is no charset.

The body is decoded in the charset the server names. `punycode`, `idna` and the
escape codecs are Python's own codecs, not charsets: punycode's decoder is
quadratic in its big-integer arithmetic (a 128 KiB body of "-999..." held the
attempt ~4 s of CPU), and the escape codecs turn the bytes into other text
("\\u0041" came back as "A"), so the result said something the server never sent.
Such a body now comes back as base64, as any body that is not text does.
Against a real http.server on 127.0.0.1.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib import logs, ssrf
from chalicelib.builtin.http_request import HttpRequestPayload, perform

BODIES = {
    "punycode": b"bcher-kva",  # "bucher" with u-umlaut
    "idna": b"xn--bcher-kva",
    "unicode_escape": b"\\u0041\\u000d",
    "raw-unicode-escape": b"\\u0041",
}


class _Charset(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        charset = parse_qs(urlsplit(self.path).query)["charset"][0]
        body = BODIES.get(charset) or "plain text".encode(charset)
        self.send_response(200)
        self.send_header("Content-Type", f"text/plain; charset={charset}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Charset)
    thread = logs.inherited_thread(server.serve_forever, name="charset-server")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fetch(port: int, charset: str) -> dict[str, Any]:
    payload = HttpRequestPayload(url=f"http://127.0.0.1:{port}/?charset={charset}", timeout=10)
    return perform(payload, ssrf.Policy.parse(["127.0.0.1"], allow_private=True))


@pytest.mark.parametrize("charset", list(BODIES))
def test_a_codec_that_is_no_charset_leaves_the_body_as_base64(port: int, charset: str) -> None:
    result = fetch(port, charset)
    assert result["body_encoding"] == "base64"
    assert base64.b64decode(result["body"]) == BODIES[charset]
    assert result["body_bytes"] == len(BODIES[charset])


@pytest.mark.parametrize("charset", ["utf-8", "latin-1", "windows-1252", "utf-16"])
def test_real_charsets_are_still_decoded(port: int, charset: str) -> None:
    result = fetch(port, charset)
    assert result["body_encoding"] == "text"
    assert result["body"] == "plain text"
