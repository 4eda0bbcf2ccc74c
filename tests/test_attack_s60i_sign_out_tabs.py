"""Sign out ends the sign-in in every dashboard tab of the browser, not only in its own.

Was (stop 60, found with headless chromium against `spool serve`): the key lives in
the tab's sessionStorage, and a browser copies a tab's sessionStorage into a tab
made from it: "Duplicate tab", and any tab the page opens with window.open. Sign out
removed the key from its own tab only, so the copy stayed signed in and kept
showing and acting on the tenant's jobs after the user had signed out (on a shared
machine, for the next person at it). Now sign out tells every dashboard tab of the
same address (a BroadcastChannel: same origin only, it carries no key), and each
drops its key and shows the sign-in form.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_ui_browser import browser, click, css, server, sign_in, until

__all__ = ["browser", "server"]  # the fixtures, shared with the dashboard's browser tests

pytestmark = pytest.mark.timeout(300)

KEY_IN_TAB = "return sessionStorage.getItem('spool.apiKey')"


def test_sign_out_ends_the_sign_in_of_a_tab_made_from_this_one(browser: Any, server: str) -> None:
    sign_in(browser, server)
    first = browser.current_window_handle
    # What "Duplicate tab" does: a new tab with a copy of this tab's sessionStorage.
    browser.execute_script("window.open(location.href.split('#')[0] + '#/dead')")
    until(browser, lambda d: len(d.window_handles) == 2)
    copy = next(h for h in browser.window_handles if h != first)
    try:
        browser.switch_to.window(copy)
        css(browser, "#dead")  # signed in there too, by the copied key
        assert browser.execute_script(KEY_IN_TAB)

        browser.switch_to.window(first)
        click(browser, "#sign-out")
        css(browser, "#sign-in")

        browser.switch_to.window(copy)
        css(browser, "#sign-in")  # was: still the dead letters, key and all
        assert browser.execute_script(KEY_IN_TAB) is None
        assert "Signed out" in css(browser, "#sign-in-error").text
    finally:
        browser.switch_to.window(copy)
        browser.close()
        browser.switch_to.window(first)
