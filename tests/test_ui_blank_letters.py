"""Letters that draw as nothing are shown as escapes, as the format characters are.

Was (stop 56, a new user's pass): app.js escaped every invisible format character
(Unicode category Cf) but not the characters of other categories that draw as blank:
the Hangul fillers (U+115F, U+1160, U+3164, U+FFA0: letters, category Lo), the braille
blank (U+2800, So), the combining grapheme joiner (U+034F) and a variation selector
on a letter it does not vary (U+FE00-FE0F). A payload `"admin\\u3164"` was drawn as
`admin`, and an error or result made only of fillers looked empty.

Now those are shown as their escapes too (`\\u3164`), but a variation selector on an
emoji (❤️, a keycap 1️⃣) or on a CJK ideograph stays: it picks how that one is drawn.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_ui_browser import browser, enqueue, go, server, sign_in, until

__all__ = ["browser", "server"]  # the fixtures, shared with the browser tests' module

pytestmark = pytest.mark.timeout(300)

BLANKS = ["\u3164", "\u115f", "\u1160", "\uffa0", "\u2800", "\u034f", "\ufe0f", "\U000e0100"]


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def escape(c: str) -> str:
    return f"\\u{ord(c):04X}" if ord(c) <= 0xFFFF else f"\\u{{{ord(c):X}}}"


@pytest.mark.parametrize("blank", BLANKS, ids=[f"{ord(c):04x}" for c in BLANKS])
def test_a_blank_character_is_shown_as_its_escape(browser: Any, server: str, blank: str) -> None:
    sign_in(browser, server)
    job_id = enqueue(
        server,
        {
            "type": "hostile",
            "payload": {"to": f"admin{blank}@x", "raise": "Bad", "message": f"{blank}{blank}"},
            "idempotency_key": f"admin{blank}-{ord(blank):x}",
        },
    )
    go(browser, server, f"#/job/{job_id}")
    shown = escape(blank)
    until(browser, lambda d: f"admin{shown}@x" in text_of(d, "job-payload"))
    until(browser, lambda d: f"{shown}{shown}" in text_of(d, "job-error"))
    assert f"admin{shown}-{ord(blank):x}" in text_of(browser, "job-facts")


def test_a_variation_selector_on_an_emoji_or_an_ideograph_stays(browser: Any, server: str) -> None:
    sign_in(browser, server)
    drawn = ["\u2764\ufe0f", "1\ufe0f\u20e3", "\u845b\U000e0100", "\u8fbb\ufe00"]
    job_id = enqueue(server, {"type": "echo", "payload": {"drawn": " ".join(drawn)}})
    go(browser, server, f"#/job/{job_id}")
    until(browser, lambda d: all(s in text_of(d, "job-payload") for s in drawn))
    assert "\\u" not in text_of(browser, "job-payload")
