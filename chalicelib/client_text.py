"""Text a client gives Spool to keep and show back holds no control character.

An idempotency key is stored with its job, written into log lines, shown by the
dashboard, `spool status` and the client, and used to look its job up. A key
holding "\\x1b[31m" recoloured the terminal that printed it, "\\n" or U+0085 (NEL)
broke it in two for a reader splitting lines, and "\\x00" is a character Postgres
text cannot hold. Such text is refused where it comes in (the API's 422, the
client's ValueError, the command line's usage error); jobs stored before the rule
are read, listed and found as they are.

Refused: Unicode category Cc (C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F), and
the lone surrogates (category Cs) no UTF-8 spells, which a JSON escape ("\\ud800")
or argument bytes that are not UTF-8 put in a str. Everything else is text: a
space, a no-break space, a letter of any script, an emoji.

spool_client/client_text.py is a link to this file (the standard library only
here), so the client refuses a key by the very rule the server does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Every character of category Cc or Cs (tests/test_s57a_client_text.py checks it
# against unicodedata over every code point).
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# What is refused, in the words of the API's document, the docs and each refusal.
REFUSED_TEXT = (
    "control characters (U+0000-U+001F, U+007F-U+009F) and unpaired surrogates are refused"
)

# Text without a control character, as a JSON Schema (ECMA-262) pattern for the API's
# document. A lone surrogate needs none: no JSON body holding one is read at all.
SCHEMA_PATTERN = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"

# The error type a refusal carries in the API's 422 details, by what was refused.
CONTROL_CHARACTER = "control_character"
LONE_SURROGATE = "lone_surrogate"


def first_refused(text: str) -> int | None:
    """The index of the first character of `text` the rule refuses, or None."""
    found = _REFUSED.search(text)
    return None if found is None else found.start()


def refused_kind(char: str) -> str:
    """CONTROL_CHARACTER or LONE_SURROGATE: which of the two `char` is."""
    return LONE_SURROGATE if "\ud800" <= char <= "\udfff" else CONTROL_CHARACTER


class Refusal(NamedTuple):
    """A refused text: `kind` (CONTROL_CHARACTER or LONE_SURROGATE) and `found`, the
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
    what = "an unpaired surrogate" if kind == LONE_SURROGATE else "a control character"
    return Refusal(kind, f"{what}, U+{ord(text[at]):04X}, at index {at}")
