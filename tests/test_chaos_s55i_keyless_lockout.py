"""A request that carries no key is not a failed sign-in: another site cannot spend it.

Was (stop 55, found with curl and headless chromium against `spool serve`): a
request with no X-API-Key (nor Bearer token) counted against its address's
SPOOL_AUTH_FAILURES allowance (20 a minute) like a wrong guess. Any page the
operator opened could make the browser send such requests to the dashboard (an
`<img>`, a `no-cors` fetch, a form post: none may add a header, all are sent), and
after 20 of them every key that had not signed in from that address before was
answered 429 without being checked: the page kept the dashboard's sign-in shut,
for everyone behind the same address, as long as it stayed open. A request
without a key guesses nothing, so there was nothing to slow down.

Now only a presented credential that fails counts; a request without one is
answered 401 every time.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for
from tests.procs import guarded_env, serving_url
from tests.test_ui_browser import _require_chromium, browser, css, sign_in

__all__ = ["browser"]  # the fixture, used here against this module's server

pytestmark = pytest.mark.timeout(300)

SIGN_INS = {"SPOOL_AUTH_FAILURES": "3/h"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with (
        installed(settings_for(tmp_path, extra=SIGN_INS)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/api/overview"),
        ("POST", "/ui/api/dead/purge"),
        ("GET", "/jobs"),
        ("POST", "/enqueue"),
        ("GET", "/metrics"),
    ],
)
def test_requests_without_a_key_do_not_shut_out_a_new_key(api: Api, method: str, path: str) -> None:
    answers = [api.call(method, path, {"all": True}, key=None).status for _ in range(10)]
    assert answers == [401] * 10
    assert api.get("/jobs", key=KEY_B).status == 200  # a key never used from here


def test_wrong_keys_are_still_slowed(api: Api) -> None:
    answers = [api.get("/jobs", key=f"guess-{n}").status for n in range(4)]
    assert answers == [401, 401, 401, 429]
    assert api.get("/jobs", key=KEY_A).status == 429  # never signed in from here


# -- the same from another origin, in a browser ------------------------------------------

KEY, OTHER = "s55i-lock-key-0123456789", "s55i-lock-first-987654"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_chromium()
    folder = tmp_path_factory.mktemp("s55i-lock")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=f"{KEY}=s55i-lock,{OTHER}=s55i-first",
        SPOOL_LOG_LEVEL="WARNING",
    )
    with serving_url("--threads", "8", env=env) as url:
        yield url


def _hostile_site(target: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A page on another origin (another loopback port) that makes the browser send 30
    keyless requests to the dashboard, as any site could."""
    page = f"""<!doctype html><title>elsewhere</title><script>
const sent = [];
for (let i = 0; i < 30; i++) {{
  sent.push(fetch("{target}/ui/api/dead/purge", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}, body: '{{"all": true}}'}}).catch(() => null));
}}
Promise.all(sent).then(() => {{ document.title = "sent"; }});
</script>""".encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site, f"http://127.0.0.1:{site.server_address[1]}/"


def test_another_site_cannot_shut_the_dashboard_sign_in(browser: Any, server: str) -> None:
    sign_in(browser, server, OTHER)  # this address has signed in before, with another key
    site, url = _hostile_site(server)
    try:
        browser.get(url)
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 20).until(lambda d: d.title == "sent")
    finally:
        site.shutdown()
        site.server_close()
    sign_in(browser, server, KEY)  # first time from here: answered, not refused unseen
    assert css(browser, "#totals .stat")
