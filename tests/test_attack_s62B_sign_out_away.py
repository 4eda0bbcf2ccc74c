"""Sign out also ends the sign-in of a tab that was on another page when it happened.

Was (stop 62, headless chromium against `spool serve`): a tab made from a signed-in
one (window.open, "Duplicate tab") holds a copy of the key in its sessionStorage, and
Sign out tells the other tabs by a BroadcastChannel message (s60i). A tab that had
browsed to another page by then got no message (no dashboard was open in it), but its
sessionStorage, which belongs to the tab and not to the page, kept the key: Back, or
the dashboard's address typed again, showed the tenant's dead letters signed in, after
the user had signed out. Now Sign out also leaves a new random mark in localStorage
(never the key) and a tab keeps its key only while the mark it signed in under is
still there: any other tab's sign out since then drops it, whenever the page loads,
comes back from the back/forward cache or asks the server anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_ui_browser import KEY, browser, click, css, server, sign_in, until

__all__ = ["browser", "server"]  # the fixtures, shared with the dashboard's browser tests

pytestmark = pytest.mark.timeout(300)

KEY_IN_TAB = "return sessionStorage.getItem('spool.apiKey')"
NO_KEY_STORED = (
    "return Object.keys(localStorage).every(name => localStorage.getItem(name) !== arguments[0])"
)


def _copy_browses_away_during_sign_out(browser: Any, server: str) -> tuple[str, str]:
    """Sign in, open a copy of the tab on the dead letters, send the copy to another
    page, sign out in the first tab: (first, copy), the copy's page elsewhere."""
    sign_in(browser, server)
    first = browser.current_window_handle
    browser.execute_script("window.open(location.href.split('#')[0] + '#/dead')")
    until(browser, lambda d: len(d.window_handles) == 2)
    copy = next(h for h in browser.window_handles if h != first)
    browser.switch_to.window(copy)
    css(browser, "#dead")  # signed in there too, by the copied key
    browser.get(f"{server}/health")  # the copy browses elsewhere: no dashboard open in it
    browser.switch_to.window(first)
    click(browser, "#sign-out")
    css(browser, "#sign-in")
    assert browser.execute_script(NO_KEY_STORED, KEY)
    browser.switch_to.window(copy)
    return first, copy


def _close(browser: Any, first: str, copy: str) -> None:
    browser.switch_to.window(copy)
    browser.close()
    browser.switch_to.window(first)


def test_back_to_the_dashboard_after_a_sign_out_elsewhere_is_signed_out(
    browser: Any, server: str
) -> None:
    first, copy = _copy_browses_away_during_sign_out(browser, server)
    try:
        browser.back()
        css(browser, "#sign-in")  # was: the dead letters again, signed in
        assert browser.execute_script(KEY_IN_TAB) is None
    finally:
        _close(browser, first, copy)


def test_the_dashboard_opened_again_in_that_tab_is_signed_out(browser: Any, server: str) -> None:
    first, copy = _copy_browses_away_during_sign_out(browser, server)
    try:
        browser.get(f"{server}/ui#/dead")
        css(browser, "#sign-in")  # was: the dead letters, by the key the tab still held
        assert browser.execute_script(KEY_IN_TAB) is None
    finally:
        _close(browser, first, copy)


def test_signing_in_again_after_a_sign_out_stays_signed_in(browser: Any, server: str) -> None:
    """The mark is the one current at sign-in: a sign-in after a sign out is kept, in
    its tab and in a tab made from it, across a reload."""
    sign_in(browser, server)
    click(browser, "#sign-out")
    css(browser, "#sign-in")
    sign_in(browser, server)
    browser.get(f"{server}/ui#/dead")
    css(browser, "#dead")
    assert browser.execute_script(KEY_IN_TAB) == KEY
    assert browser.execute_script(NO_KEY_STORED, KEY)
