"""The command line shows letters that draw as nothing as escapes, as the dashboard does.

Was (stop 56, a new user's pass): local/tables.py printable() escaped what Python calls
unprintable (controls, format characters such as U+202E) but let through the
characters of other categories that a terminal draws as blank: the Hangul fillers
(U+115F, U+1160, U+3164, U+FFA0), the braille blank (U+2800), the combining grapheme
joiner (U+034F) and a variation selector with nothing to vary. `spool jobs` showed a
result `"admin\\u3164"` as `admin`, and an error of fillers as an empty cell.
"""

from __future__ import annotations

import pytest

from local.tables import printable

BLANKS = ["\u3164", "\u115f", "\u1160", "\uffa0", "\u2800", "\u034f", "\ufe0f", "\U000e0100"]


@pytest.mark.parametrize("blank", BLANKS, ids=[f"{ord(c):04x}" for c in BLANKS])
def test_a_blank_character_is_shown_escaped(blank: str) -> None:
    shown = printable(f"admin{blank}@x {blank}{blank}")
    escape = blank.encode("unicode_escape").decode()
    assert shown == f"admin{escape}@x {escape}{escape}"


def test_a_variation_selector_on_a_picture_or_an_ideograph_stays() -> None:
    for drawn in ("\u2764\ufe0f", "\u845b\U000e0100", "\u8fbb\ufe00", "caf\u00e9 \u4e2d"):
        assert printable(drawn) == drawn
