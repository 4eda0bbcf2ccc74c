"""Header values for send_email: refuse what could break out of its header line.

Python's email package decodes RFC 2047 encoded words (`=?utf-8?q?...?=`) when
it parses a header value, and some interpreters (3.11.7 among them, the
CVE-2024-6923 class) then write a decoded CR/LF back out unencoded: a subject
of `=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=` put a separate
Reply-To header on the wire. So the check here does not trust the interpreter:

- `check_value` refuses a value whose raw text, or whatever any encoded word
  in it decodes to (q or b, any charset Python knows, unknown ones read byte
  for byte, nested words decoded again), holds a control character: C0, DEL,
  C1 (U+0085 included), the Unicode line and paragraph separators, or a
  lone surrogate (no encoding writes one). A value with more than MAX_WORDS
  encoded words in all is refused as well: overlapping nested words multiply
  at every level of decoding. The payload model calls it for every
  header-like field, at enqueue and again when the worker parses the payload.
- `check_wire` looks at the bytes about to be sent: exactly the headers the
  message was built with, each line ending in CRLF, and no header that a
  receiver would decode to a control character. A miss above is then a
  permanent failure, never a forged header.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterator, Sequence
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as DEFAULT_POLICY

# An encoded word as the email package reads one: the text runs to the first
# "?=" and may hold spaces; found wherever it starts, even inside a word.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([qQbB])\?(.*?)\?=", re.DOTALL)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
MAX_NESTING = 5
# Encoded words decoded per value, nested ones included. Overlapping words that
# decode to overlapping words again multiply at every level (about k**5/120 texts
# for k words): 592 characters held the check for 16 s and ~300 MB. A real header
# has a few dozen at most (998 characters of the shortest word are ~110).
MAX_WORDS = 100


class UnsafeHeader(ValueError):
    """A header value that holds, or decodes to, a control character."""


def control_in(text: str) -> str | None:
    """The first character that may end or corrupt a header line, or None. A lone
    surrogate (Cs: a JSON "\\ud800" escape) is one: no encoding writes it, so the
    message could not be built, or (U+DC80-U+DCFF) went out as an "unknown-8bit"
    byte the client never wrote."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs"):
            return char
    return None


def _kind(char: str) -> str:
    return "lone surrogate" if unicodedata.category(char) == "Cs" else "control character"


def _cte_decode(cte: str, text: str) -> bytes | None:
    raw = text.encode("ascii", "surrogateescape")
    if cte.lower() == "q":
        return _Q_ESCAPE.sub(lambda m: bytes.fromhex(m.group(1).decode()), raw.replace(b"_", b" "))
    # b: like the email package, forgive missing padding and stray characters.
    for candidate, validate in ((raw + b"=" * (-len(raw) % 4), True), (raw, False)):
        try:
            return base64.b64decode(candidate, validate=validate)
        except (binascii.Error, ValueError):
            continue
    try:
        return base64.b64decode(raw + b"==", validate=False)
    except (binascii.Error, ValueError):
        return None  # left undecoded by the email package too


def _charset_views(data: bytes, charset: str) -> list[str]:
    """What a reader may make of the bytes: the charset's reading, and byte for
    byte (latin-1) when the charset is unknown or the bytes do not fit it."""
    codec = charset.partition("*")[0]  # RFC 2231 language suffix
    try:
        return [data.decode(codec)]
    except UnicodeDecodeError:
        return [data.decode(codec, "replace"), data.decode("latin-1")]
    except Exception:  # unknown or non-text codec: the email package keeps the bytes
        return [data.decode("latin-1")]


def _overlapping_words(text: str) -> Iterator[re.Match[str]]:
    """Every encoded word, starting at any "=?" before the last "?=" (none can start
    after it), so a text with no terminator is not scanned again from every start."""
    last = text.rfind("?=")
    start = text.find("=?")
    while 0 <= start < last:
        match = _ENCODED_WORD.match(text, start)
        if match is not None:
            yield match
        start = text.find("=?", start + 1)


def decoded_views(value: str) -> list[str]:
    """The value and every text its encoded words decode to, nested ones included.

    Raises UnsafeHeader past MAX_WORDS decoded words: what cannot be checked
    within a fixed amount of work is refused, not let through unchecked."""
    views = [value]
    seen = {value}
    pending = [value]
    words = 0
    for _ in range(MAX_NESTING):
        found: list[str] = []
        for text in pending:
            for match in _overlapping_words(text):
                words += 1
                if words > MAX_WORDS:
                    raise UnsafeHeader(
                        f"holds more than {MAX_WORDS} encoded words (nested ones included)"
                    )
                data = _cte_decode(match.group(2), match.group(3))
                if data is None:
                    continue
                for view in _charset_views(data, match.group(1)):
                    if view not in seen:
                        seen.add(view)
                        found.append(view)
        if not found:
            break
        views.extend(found)
        pending = found
    return views


def check_value(value: str, what: str) -> str:
    """Return the value, or raise UnsafeHeader naming the field and the character."""
    try:
        views = decoded_views(value)
    except UnsafeHeader as exc:
        raise UnsafeHeader(
            f"{what} {exc}; send the text itself: the handler encodes what needs it"
        ) from None
    for view in views:
        char = control_in(view)
        if char is not None:
            where = "" if view is value else " once its encoded words are decoded"
            raise UnsafeHeader(
                f"{what} holds a {_kind(char)} (U+{ord(char):04X}){where}; "
                "header values must be one line of text"
            )
    return value


def render(message: EmailMessage) -> bytes:
    """The bytes send_email hands to the server (checked by check_wire first)."""
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def check_wire(wire: bytes, expected: Sequence[str]) -> None:
    """Refuse (UnsafeHeader) bytes whose header block is not exactly `expected`."""
    head, separator, _ = wire.partition(b"\r\n\r\n")
    if not separator:
        raise UnsafeHeader("the rendered message has no end of headers")
    names: list[str] = []
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise UnsafeHeader("a rendered header line holds a bare CR, LF or NUL")
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the header before it
        field_name, colon, _ = line.partition(b":")
        if not colon:
            raise UnsafeHeader(f"a rendered header line is not a header: {line[:60]!r}")
        names.append(field_name.decode("ascii", "replace").lower())
    wanted = [n.lower() for n in expected]
    if names != wanted:
        extra = sorted(set(names) - set(wanted)) or names
        raise UnsafeHeader(f"the rendered headers differ from the message's: {extra}")
    parsed = BytesParser(policy=DEFAULT_POLICY).parsebytes(head + b"\r\n\r\n", headersonly=True)
    for name, value in parsed.items():
        check_value(str(value), f"the rendered {name} header")
