"""Text a client gives Spool to keep and show back holds no control character and
nothing invisible that changes how it, or the line around it, reads.

An idempotency key is stored with its job, written into log lines, shown by the
dashboard, `spool status` and the client, and used to look its job up. A key
holding "\\x1b[31m" recoloured the terminal that printed it, "\\n" or U+0085 (NEL)
broke it in two for a reader splitting lines, and "\\x00" is a character Postgres
text cannot hold. U+2028 and U+2029 break a line too (JavaScript's and many
editors' line terminators); U+202E (a bidi override) or U+2067 (an isolate) makes
a dashboard row or a terminal show the rest of the line reversed; U+200B and U+FEFF
make two keys that look the same differ. Such text is refused where it comes in
(the API's 422, the client's ValueError, the command line's usage error); jobs
stored before the rule are read, listed and found as they are.

Refused, by Unicode category:
- Cc, control characters (C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F);
- Zl and Zp, the line and paragraph separators U+2028 and U+2029;
- Cf, the invisible format characters (bidi marks, embeddings, overrides and
  isolates U+200E-U+200F, U+202A-U+202E, U+2066-U+2069, U+061C; zero-width space
  U+200B, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, ...), except U+200C
  and U+200D (zero-width non-joiner and joiner), which Persian, the Indic scripts and
  emoji sequences need to be written at all;
- Cs, the lone surrogates no UTF-8 spells, which a JSON escape ("\\ud800") or
  argument bytes that are not UTF-8 put in a str.
Everything else is text: a space, a no-break space, a letter of any script, an emoji.

The type, queue and tenant names a client gives are ASCII by their own pattern
(config.NAME_PATTERN), and a callback URL is refused whole for any of these
characters (ssrf.parse_url), so the idempotency key is the one free text this rule
guards. spool_client/client_text.py is a link to this file (the standard library
only here), so the client refuses a key by the very rule the server does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The refused characters as (first, last) code points, by the category that refuses
# them (Unicode 14, Python 3.11's; tests/test_s57a_client_text.py checks the classes
# against unicodedata over every code point).
_CONTROL = ((0x00, 0x1F), (0x7F, 0x9F))
_SEPARATOR = ((0x2028, 0x2029),)
_FORMAT = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200B), (0x200E, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064),
    (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    # Outside the BMP: the document's pattern cannot name these (see SCHEMA_PATTERN).
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
_SURROGATE = ((0xD800, 0xDFFF),)


def _ranges(spans: tuple[tuple[int, int], ...], escape: bool = False) -> str:
    """`spans` as the inside of a character class: the characters themselves, or
    ECMA-262's \\uXXXX escapes (which Python's re reads alike) for the document."""

    def one(point: int) -> str:
        return f"\\u{point:04X}" if escape else re.escape(chr(point))

    return "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in spans)


_REFUSED = re.compile(f"[{_ranges(_CONTROL + _SEPARATOR + _FORMAT + _SURROGATE)}]")

# What is refused, in the words of the API's document, the docs and each refusal.
REFUSED_TEXT = (
    "control characters (U+0000-U+001F, U+007F-U+009F), the line and paragraph "
    "separators U+2028 and U+2029, invisible format characters (Unicode Cf: bidi "
    "controls such as U+202E, U+200B, U+FEFF; U+200C and U+200D are text) and unpaired "
    "surrogates are refused"
)

# Text without a refused character, as a JSON Schema (ECMA-262) pattern for the API's
# document. It names the characters of the Basic Multilingual Plane only: without
# ECMA-262's u flag a character beyond it is two UTF-16 units, and a class of those
# would refuse its neighbours too; the field's validator refuses those few (Cf in
# Kaithi, Egyptian hieroglyphs, musical notation, the tag characters) as well. A lone
# surrogate needs none: no JSON body holding one is read at all.
_IN_THE_BMP = tuple(s for s in _CONTROL + _SEPARATOR + _FORMAT if s[1] <= 0xFFFF)
SCHEMA_PATTERN = f"^[^{_ranges(_IN_THE_BMP, escape=True)}]*$"

# The error type a refusal carries in the API's 422 details, by what was refused.
CONTROL_CHARACTER = "control_character"
LINE_SEPARATOR = "line_separator"
FORMAT_CHARACTER = "format_character"
LONE_SURROGATE = "lone_surrogate"

# How a refusal names each kind of character.
_NAMED = {
    CONTROL_CHARACTER: "a control character",
    LINE_SEPARATOR: "a line separator",
    FORMAT_CHARACTER: "an invisible format character",
    LONE_SURROGATE: "an unpaired surrogate",
}


def first_refused(text: str) -> int | None:
    """The index of the first character of `text` the rule refuses, or None."""
    found = _REFUSED.search(text)
    return None if found is None else found.start()


def refused_kind(char: str) -> str:
    """Which kind of refused character `char` is (one of the error types above)."""
    point = ord(char)
    for kind, spans in (
        (LONE_SURROGATE, _SURROGATE),
        (LINE_SEPARATOR, _SEPARATOR),
        (FORMAT_CHARACTER, _FORMAT),
    ):
        if any(a <= point <= b for a, b in spans):
            return kind
    return CONTROL_CHARACTER


class Refusal(NamedTuple):
    """A refused text: `kind` (one of the error types above) and `found`, the
    character by its code point and where it is ("a control character, U+000A, at
    index 5"), never written out: it may be the very thing a terminal obeys."""

    kind: str
    found: str

    def message(self, subject: str) -> str:
        """One sentence: `subject` ("idempotency_key", "the key") holds what was found,
        and the rule."""
        return f"{subject} holds {self.found}: {REFUSED_TEXT}"


def refusal(text: str) -> Refusal | None:
    """Why `text` cannot be a client's text, or None when it can."""
    at = first_refused(text)
    if at is None:
        return None
    kind = refused_kind(text[at])
    return Refusal(kind, f"{_NAMED[kind]}, U+{ord(text[at]):04X}, at index {at}")
