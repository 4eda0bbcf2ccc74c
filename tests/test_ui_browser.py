"""The dashboard in a real browser: headless Debian chromium (Selenium + chromium-driver)
against a real `spool serve` on a free loopback port, SQLite and the emulated worker.

Every scenario of issue 12: sign in; watch a job go from queued to succeeded
without reloading; find a dead job, open its attempts, redrive it; cancel a
delayed job; filter and page through 500 jobs; hostile payloads run no script.
Screenshots are taken along the way (docs/img when UI_SCREENSHOTS names it).

chromium missing: skipped saying why, or a failure when CI=true or SPOOL_REQUIRE_CHROMIUM=1
(.ci/run sets it).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests

from tests.procs import guarded_env, serving_url

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY, TENANT = "ui-key-0123456789", "tenant-ui"
OTHER_KEY = "ui-other-987654321"
BUSY_KEY = "ui-busy-1122334455"  # a tenant whose jobs keep dying while a page is open
SYSTEM_KEY = "ui-system-55555555"
SCHEDULES = '[{"name": "hourly-report", "type": "echo", "every": 3600, "payload": {"r": 1}}]'
WAIT = 20.0
XSS = {
    "img": "<img src=x onerror=\"window.__xss='img'\">",
    "script": "\"><script>window.__xss='script'</script>",
    "attr": "' onmouseover='window.__xss=1' x='",
    "bare": "<img src=x onerror=window.__xss=1>",
    "link": "javascript:window.__xss='link'",
    "svg": "<svg onload=window.__xss='svg'>",
    "close": "</pre></td><script>window.__xss='close'</script>",
}

pytestmark = pytest.mark.timeout(300)


def _require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = (
        "the browser tests need "
        + ", ".join(missing)
        + " (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("SPOOL_REQUIRE_CHROMIUM"):
        pytest.fail(
            reason + "; required here (CI=true or SPOOL_REQUIRE_CHROMIUM=1, as .ci/run sets)"
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_chromium()
    folder = tmp_path_factory.mktemp("ui")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=f"{KEY}={TENANT},{OTHER_KEY}=tenant-other,{SYSTEM_KEY}=_system,"
        f"{BUSY_KEY}=tenant-busy",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_HANDLERS="tests.hostile_handlers",
        SPOOL_SCHEDULES=SCHEDULES,
        SPOOL_LOG_LEVEL="WARNING",
    )
    with serving_url("--threads", "8", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never fetches anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--metrics-recording-only",
        # Anything not on loopback (which Chrome never proxies) goes to a closed local port.
        "--proxy-server=http://127.0.0.1:9",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("UI_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- helpers ------------------------------------------------------------------------------


def enqueue(server: str, job: dict[str, Any], key: str = KEY) -> str:
    reply = requests.post(f"{server}/enqueue", json=job, headers={"X-API-Key": key}, timeout=10)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def state_of(server: str, job_id: str, key: str = KEY) -> str:
    reply = requests.get(f"{server}/status/{job_id}", headers={"X-API-Key": key}, timeout=10)
    return str(reply.json()["state"])


def until(driver: Any, check: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws while it polls: an element read a moment ago may be gone.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, 0.1, ignored_exceptions=ignored).until(check)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return until(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector))


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def table_rows(driver: Any, table: str) -> list[tuple[str, str]]:
    """(id, state) of each job row, read in one go (the page redraws as it polls)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr[data-id]'))"
        ".map(r => [r.dataset.id, r.dataset.state, r.childNodes.length,"
        " Array.from(r.cells).map(c => c.textContent)])",
        table,
    )
    for job_id, state, nodes, cells in rows:  # the columns line up with the header
        if table == "jobs":
            assert nodes == 8 and cells[0] == job_id and cells[3] == state, cells
    return [(str(i), str(s)) for i, s, _, _ in rows]


def view_of(driver: Any) -> str:
    """The view the page has drawn (its hash), set before the view replaces the last one."""
    return str(driver.execute_script("return document.getElementById('app').dataset.view || ''"))


def click(driver: Any, selector: str) -> None:
    """Click what the selector names now (found again if a redraw replaced it)."""
    from selenium.webdriver.common.by import By

    until(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)


def text_of(driver: Any, selector: str) -> str:
    """The element's text, found and read in one step (a redraw between them goes stale)."""
    from selenium.webdriver.common.by import By

    return str(until(driver, lambda d: [d.find_element(By.CSS_SELECTOR, selector).text])[0])


def attribute_of(driver: Any, selector: str, name: str) -> str | None:
    """An attribute of what the selector names now, found and read in one step."""
    from selenium.webdriver.common.by import By

    found = until(driver, lambda d: [d.find_element(By.CSS_SELECTOR, selector).get_attribute(name)])
    return None if found[0] is None else str(found[0])


def go(driver: Any, server: str, hash_: str) -> None:
    """Navigate inside the app (no reload: the hash changes)."""
    if not driver.current_url.startswith(f"{server}/ui"):
        driver.get(f"{server}/ui{hash_}")
    else:
        driver.execute_script("location.hash = arguments[0]", hash_)


def sign_in(driver: Any, server: str, key: str = KEY) -> None:
    driver.get(f"{server}/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server}/ui")
    box = css(driver, "#api-key")
    box.clear()
    box.send_keys(key)
    css(driver, "#sign-in-button").click()
    css(driver, "#totals .stat")


def no_script_ran(driver: Any) -> None:
    assert driver.execute_script("return window.__xss === undefined")
    assert driver.execute_script("return document.querySelectorAll('img, svg image').length") == 0
    # Every link is one of the page's own (#/...): none a server value made a URL of.
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('[href]')).map(e => e.getAttribute('href'))"
    )
    assert all(h.startswith(("#/", "ui/static/")) for h in hrefs), hrefs
    handlers = driver.execute_script(
        "return Array.from(document.querySelectorAll('*')).flatMap(e =>"
        " Array.from(e.attributes).map(a => a.name)).filter(n => n.startsWith('on'))"
    )
    assert handlers == [], handlers  # no inline handler attribute anywhere
    scripts = driver.execute_script(
        "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
    )
    assert scripts == ["ui/static/app.js"]
    logs = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert logs == [], logs  # nothing even tried to run (escaping, not just the CSP)


# -- the scenarios -------------------------------------------------------------------------


def test_the_page_at_ui_slash_lands_on_ui(browser: Any, server: str) -> None:
    browser.get(f"{server}/ui/")
    css(browser, "#api-key")  # the script and stylesheet loaded: the sign-in form is drawn
    assert browser.current_url == f"{server}/ui"


def test_html_from_a_string_is_refused_by_the_page_itself(browser: Any, server: str) -> None:
    """Trusted Types: the page's policy lets no string become HTML or script, so a
    mistake in app.js that set innerHTML from a server value would throw instead of
    parsing it (the script's own rule, textContent only, enforced by the browser)."""
    sign_in(browser, server)
    tried = browser.execute_script(
        "const out = [];"
        "for (const f of [() => { document.body.insertAdjacentHTML('beforeend', '<b>x</b>') },"
        "                 () => { document.createElement('div').innerHTML = '<i>y</i>' },"
        "                 () => { document.createElement('script').text = 'void 0' }]) {"
        "  try { f(); out.push('ran') } catch (e) { out.push(e.name) } }"
        "return out"
    )
    assert tried == ["TypeError", "TypeError", "TypeError"], tried
    browser.get_log("browser")  # the refusals' own reports, not the next test's


def test_sign_in_refuses_a_wrong_key_then_shows_the_overview(
    browser: Any, server: str, shots: Path
) -> None:
    browser.get(f"{server}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server}/ui")
    css(browser, "#api-key").send_keys("not-a-key-at-all")
    click(browser, "#sign-in-button")
    until(browser, lambda d: d.find_element("id", "sign-in-error").is_displayed())
    assert "invalid API key" in text_of(browser, "#sign-in-error")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert browser.get_cookies() == []
    for i in range(3):
        enqueue(server, {"type": "echo", "payload": {"i": i}, "queue": "mail"})
    enqueue(server, {"type": "fail", "payload": {"times": 1}, "max_attempts": 3, "queue": "mail"})
    enqueue(server, {"type": "echo", "payload": {}, "queue": "reports", "delay": 3600})
    sign_in(browser, server)
    assert browser.get_cookies() == []  # the key is in sessionStorage, sent as a header only
    until(
        browser,
        lambda d: "4" in d.find_element("css selector", "#totals [data-state=succeeded] .n").text,
    )
    assert text_of(browser, "#queues tr[data-queue=mail] td[data-state=succeeded]") == "4"
    until(browser, lambda d: len(all_css(d, "#chart svg rect.bad")) >= 1)
    assert "live worker" in text_of(browser, "#workers")
    browser.save_screenshot(str(shots / "dashboard-overview.png"))


def test_a_job_goes_from_queued_to_succeeded_without_a_reload(
    browser: Any, server: str, shots: Path
) -> None:
    sign_in(browser, server)
    job_id = enqueue(server, {"type": "sleep", "payload": {"seconds": 1.0}, "delay": 2})
    go(browser, server, f"#/job/{job_id}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "queued")
    browser.execute_script("window.__sameDocument = 'yes'")  # gone if the page reloads
    until(browser, lambda d: d.find_element("id", "job-state").text == "running")
    until(browser, lambda d: d.find_element("id", "job-state").text == "succeeded")
    assert browser.execute_script("return window.__sameDocument") == "yes"
    assert '"slept": 1' in text_of(browser, "#job-result")
    assert all_css(browser, "#attempts tr.outcome-succeeded")
    browser.save_screenshot(str(shots / "dashboard-job.png"))


def test_find_a_dead_job_open_its_attempts_and_redrive_it(
    browser: Any, server: str, shots: Path
) -> None:
    sign_in(browser, server)
    message = "card declined"
    job_id = enqueue(
        server, {"type": "fail", "payload": {"always": True, "message": message}, "max_attempts": 1}
    )
    until(browser, lambda d: state_of(server, job_id) == "dead")
    go(browser, server, "#/dead")
    css(browser, f"#dead tr[data-id='{job_id}'] a")
    click(browser, f"#dead tr[data-id='{job_id}'] input.pick")
    assert "Redrive selected (1)" in text_of(browser, "#redrive-selected")
    browser.save_screenshot(str(shots / "dashboard-dead-letters.png"))
    click(browser, f"#dead tr[data-id='{job_id}'] a")
    until(browser, lambda d: d.find_element("id", "job-state").text == "dead")
    attempt = text_of(browser, "#attempts tr.outcome-dead")
    assert "RuntimeError: card declined (attempt 1)" in attempt
    click(browser, "#attempts details.traceback summary")
    trace = text_of(browser, "#attempts details.traceback pre")
    assert "Traceback" in trace and "RuntimeError: card declined" in trace
    click(browser, "#redrive")
    assert text_of(browser, "#confirm-message") == f"Redrive job {job_id}?"
    click(browser, "#confirm-yes")
    until(browser, lambda d: "Redriven" in d.find_element("id", "action-note").text)
    # It fails again (always=True): the history keeps both attempts, numbered from 1.
    until(browser, lambda d: len(all_css(d, "#attempts tr.attempt")) == 2, timeout=30)
    assert state_of(server, job_id) == "dead"


def test_dead_letters_redrive_many_and_purge_all_say_how_many(browser: Any, server: str) -> None:
    sign_in(browser, server, OTHER_KEY)  # a tenant of its own: its counts are exact
    ids = [
        enqueue(server, {"type": "fail", "payload": {"always": True}, "max_attempts": 1}, OTHER_KEY)
        for _ in range(4)
    ]
    until(browser, lambda d: all(state_of(server, i, OTHER_KEY) == "dead" for i in ids))
    go(browser, server, "#/dead")
    until(browser, lambda d: len(all_css(d, "#dead input.pick")) == 4)
    until(browser, lambda d: "(4)" in d.find_element("id", "purge-all").text)
    for job_id in ids[:2]:
        click(browser, f"#dead tr[data-id='{job_id}'] input.pick")
    click(browser, "#redrive-selected")
    assert text_of(browser, "#confirm-message").startswith("Redrive 2 dead jobs?")
    click(browser, "#confirm-yes")
    until(browser, lambda d: d.find_element("id", "action-note").text == "Redriven 2 jobs.")
    until(browser, lambda d: all(state_of(server, i, OTHER_KEY) == "dead" for i in ids))
    until(browser, lambda d: "(4)" in d.find_element("id", "purge-all").text)
    click(browser, "#purge-all")
    assert text_of(browser, "#confirm-message").startswith("Purge 4 dead jobs?")
    click(browser, "#confirm-no")  # said no: nothing happens
    assert state_of(server, ids[0], OTHER_KEY) == "dead"
    click(browser, "#purge-all")
    click(browser, "#confirm-yes")
    until(browser, lambda d: d.find_element("id", "action-note").text == "Purged 4 jobs.")
    until(browser, lambda d: "No dead jobs." in d.find_element("id", "dead").text)
    reply = requests.get(f"{server}/status/{ids[0]}", headers={"X-API-Key": OTHER_KEY}, timeout=10)
    assert reply.status_code == 404


def test_cancel_a_delayed_job(browser: Any, server: str) -> None:
    sign_in(browser, server)
    job_id = enqueue(server, {"type": "echo", "payload": {}, "delay": 3600})
    go(browser, server, f"#/job/{job_id}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "queued")
    click(browser, "#cancel")
    # Its way out read "Cancel" too, beside the red "Cancel" that cancels the job.
    assert (text_of(browser, "#confirm-yes"), text_of(browser, "#confirm-no")) == (
        "Cancel job",
        "Go back",
    )
    click(browser, "#confirm-yes")
    until(browser, lambda d: d.find_element("id", "job-state").text == "cancelled")
    assert not all_css(browser, "#cancel")  # a cancelled job offers no cancel
    assert state_of(server, job_id) == "cancelled"


def test_filter_and_page_through_500_jobs(browser: Any, server: str, shots: Path) -> None:
    batches: list[list[str]] = []
    for start in range(0, 500, 100):
        jobs = [
            {"type": "echo", "payload": {"n": n}, "queue": "bulk", "delay": 3600}
            for n in range(start, start + 100)
        ]
        reply = requests.post(
            f"{server}/enqueue", json={"jobs": jobs}, headers={"X-API-Key": KEY}, timeout=30
        )
        assert reply.status_code == 201, reply.text
        batches.append([j["id"] for j in reply.json()["jobs"]])
    created = [job_id for batch in batches for job_id in batch]
    sign_in(browser, server)
    go(browser, server, "#/jobs")
    css(browser, "#filter-queue").send_keys("bulk")
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#filter-state")).select_by_value("queued")
    click(browser, "#apply-filters")
    until(browser, lambda d: "queue=bulk" in view_of(d) and "state=queued" in view_of(d))
    seen: list[str] = []
    for page in range(1, 11):

        def on_page(d: Any, p: int = page) -> bool:
            return bool(d.find_element("id", "page-number").text == f"Page {p}")

        until(browser, on_page)
        rows = until(browser, lambda d: table_rows(d, "jobs"))
        assert len(rows) == 50 and {state for _, state in rows} == {"queued"}
        seen += [job_id for job_id, _ in rows]
        if page == 3:
            browser.save_screenshot(str(shots / "dashboard-jobs.png"))
        if page < 10:
            click(browser, "#older")
    assert attribute_of(browser, "#older", "disabled") is not None
    # Newest first, no gaps, no repeats: a batch shares its created_at, the id breaks ties.
    assert seen == [i for batch in reversed(batches) for i in sorted(batch, reverse=True)]
    click(browser, "#newer")
    until(browser, lambda d: d.find_element("id", "page-number").text == "Page 9")
    css(browser, "#find").send_keys(created[123])
    click(browser, "#apply-filters")
    until(browser, lambda d: "find=" in view_of(d))
    until(browser, lambda d: [i for i, _ in table_rows(d, "jobs")] == [created[123]])


def test_hostile_payloads_and_errors_run_no_script(browser: Any, server: str) -> None:
    sign_in(browser, server)
    shown = enqueue(
        server,
        {
            "type": "echo",
            "payload": {**XSS, "headers": {"Authorization": "Bearer sekret-token-1"}},
            "idempotency_key": XSS["script"],
        },
    )
    died = enqueue(
        server,
        {"type": "fail", "payload": {"always": True, "message": XSS["img"]}, "max_attempts": 1},
    )
    until(
        browser,
        lambda d: state_of(server, died) == "dead" and state_of(server, shown) == "succeeded",
    )
    go(browser, server, "#/jobs")
    until(browser, lambda d: all_css(d, f"#jobs tr[data-id='{died}']"))
    assert XSS["img"] in text_of(browser, f"#jobs tr[data-id='{died}']")
    no_script_ran(browser)
    go(browser, server, f"#/job/{shown}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "succeeded")
    page = text_of(browser, "#job-payload")
    assert all(json.dumps(v) in page for v in XSS.values())  # shown as JSON text
    assert "sekret-token-1" not in browser.page_source and "***" in page  # masked
    assert XSS["script"] in text_of(browser, "#job-facts")  # the idempotency key, as text
    no_script_ran(browser)
    go(browser, server, f"#/job/{died}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "dead")
    click(browser, "#attempts details.traceback summary")
    assert XSS["img"] in text_of(browser, "#attempts details.traceback pre")
    assert XSS["img"] in text_of(browser, "#job-error")
    go(browser, server, "#/dead")
    until(browser, lambda d: all_css(d, f"#dead tr[data-id='{died}']"))
    no_script_ran(browser)


def test_every_road_a_tenant_has_to_the_page_shows_text_and_runs_nothing(
    browser: Any, server: str
) -> None:
    """The result, the handler's log lines, the error, the error's type name and the
    idempotency key, all hostile (tests/hostile_handlers.py), on every page that shows
    them: each is shown as the very characters sent, no script runs, no link is made."""
    texts = list(XSS.values())
    # Types and queues are names: markup cannot even be stored there.
    for field in ("type", "queue"):
        reply = requests.post(
            f"{server}/enqueue",
            json={"type": "echo", field: XSS["bare"]},
            headers={"X-API-Key": KEY},
            timeout=10,
        )
        assert reply.status_code == 422, reply.text
    done = enqueue(
        server,
        {
            "type": "hostile",
            "payload": {"result": {t: t for t in texts}, XSS["bare"]: [XSS["link"]]},
            "idempotency_key": XSS["link"],
        },
    )
    died = enqueue(
        server,
        {
            "type": "hostile",
            "payload": {"log": texts, "raise": XSS["bare"], "message": XSS["close"]},
            "idempotency_key": XSS["svg"],
        },
    )
    until(
        browser,
        lambda d: state_of(server, died) == "dead" and state_of(server, done) == "succeeded",
    )
    sign_in(browser, server)
    # The list: the error's start, and a search by a hostile idempotency key.
    go(browser, server, "#/jobs?type=hostile")
    until(browser, lambda d: all_css(d, f"#jobs tr[data-id='{died}']"))
    row = text_of(browser, f"#jobs tr[data-id='{died}']")
    assert XSS["bare"] in row and XSS["close"][:20] in row
    no_script_ran(browser)
    css(browser, "#find").send_keys(XSS["link"])
    click(browser, "#apply-filters")
    until(
        browser,
        lambda d: (
            [r.get_attribute("data-id") for r in all_css(d, "#jobs tbody tr[data-id]")] == [done]
        ),
    )
    no_script_ran(browser)
    # The finished job: its payload (a hostile key too) and its result.
    go(browser, server, f"#/job/{done}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "succeeded")
    result = text_of(browser, "#job-result")
    assert all(json.dumps(t) in result for t in texts), result
    assert json.dumps(XSS["bare"]) in text_of(browser, "#job-payload")
    assert XSS["link"] in text_of(browser, "#job-facts")
    no_script_ran(browser)
    # The dead job: its error, its type name, its log lines and traceback.
    go(browser, server, f"#/job/{died}")
    until(browser, lambda d: d.find_element("id", "job-state").text == "dead")
    assert f"{XSS['bare']}: {XSS['close']}" in text_of(browser, "#attempts")
    assert XSS["close"] in text_of(browser, "#job-error")
    for summary in all_css(browser, "#attempts details summary"):
        summary.click()
    shown = text_of(browser, "#attempts")
    assert all(t in shown for t in texts), shown
    assert XSS["svg"] in text_of(browser, "#job-facts")
    no_script_ran(browser)
    go(browser, server, "#/dead")
    until(browser, lambda d: all_css(d, f"#dead tr[data-id='{died}']"))
    assert XSS["bare"] in text_of(browser, f"#dead tr[data-id='{died}']")
    no_script_ran(browser)


def test_schedules_page_shows_next_run_and_last_jobs(
    browser: Any, server: str, shots: Path
) -> None:
    sign_in(browser, server)
    go(browser, server, "#/schedules")
    until(browser, lambda d: "sign in with its key" in text_of(d, "#schedules"))
    assert "hourly-report" not in text_of(browser, "#schedules")  # the operator's, not yours
    assert not all_css(browser, "#schedules tr[data-schedule]")
    sign_in(browser, server, SYSTEM_KEY)
    go(browser, server, "#/schedules")
    row = text_of(browser, "#schedules tr[data-schedule=hourly-report]")
    assert "every 3600s" in row and "in " in row  # its next run, relative
    # The emulated worker fires the current tick; the system tenant sees its job.
    until(browser, lambda d: d.find_elements("css selector", "#schedules ul.runs a"), timeout=30)
    browser.save_screenshot(str(shots / "dashboard-schedules.png"))


class _StagePrefix(http.server.BaseHTTPRequestHandler):
    """API Gateway's shape in front of the server: /api/<path> is served as /<path>."""

    target = ""

    def _forward(self) -> None:
        if not self.path.startswith("/api/"):
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        reply = requests.request(
            self.command,
            self.target + self.path[len("/api") :],
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
            data=self.rfile.read(length) if length else None,
            timeout=30,
        )
        self.send_response(reply.status_code)
        for name, value in reply.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_page_works_under_a_stage_prefix(browser: Any, server: str) -> None:
    """Every URL the page uses is relative, so /api/ui works as /ui does."""
    handler = type("Handler", (_StagePrefix,), {"target": server})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    prefixed = f"http://127.0.0.1:{proxy.server_address[1]}/api"
    try:
        job_id = enqueue(server, {"type": "echo", "payload": {"via": "stage"}})
        sign_in(browser, prefixed)
        go(browser, prefixed, f"#/job/{job_id}")
        until(browser, lambda d: d.find_element("id", "job-state").text == "succeeded")
        assert browser.current_url.startswith(f"{prefixed}/ui#")
        assert browser.execute_script(
            "return performance.getEntriesByType('resource').every(e => e.name.includes('/api/'))"
        )
    finally:
        proxy.shutdown()
        proxy.server_close()


# -- probed from outside: each failed before its fix ---------------------------------------


def test_purge_all_acts_on_no_more_jobs_than_the_confirmation_said(
    browser: Any, server: str
) -> None:
    """Jobs that die while "Purge 2 dead jobs?" is open are not purged with them.
    Before: "all" purged every dead job at the moment of the click on yes."""

    def die(n: int) -> list[str]:
        job = {"type": "fail", "payload": {"always": True}, "max_attempts": 1}
        ids = [enqueue(server, job, OTHER_KEY) for _ in range(n)]
        until(browser, lambda d: all(state_of(server, i, OTHER_KEY) == "dead" for i in ids))
        return ids

    requests.post(  # start from no dead jobs for this tenant
        f"{server}/ui/api/dead/purge", json={"all": True}, headers={"X-API-Key": OTHER_KEY}
    )
    first = die(2)
    sign_in(browser, server, OTHER_KEY)
    go(browser, server, "#/dead")
    until(browser, lambda d: "(2)" in d.find_element("id", "purge-all").text)
    click(browser, "#purge-all")
    assert text_of(browser, "#confirm-message").startswith("Purge 2 dead jobs?")
    later = die(2)
    until(browser, lambda d: "(4)" in d.find_element("id", "purge-all").text)
    click(browser, "#confirm-yes")
    until(browser, lambda d: d.find_element("id", "action-note").text == "Purged 2 jobs.")
    assert [state_of(server, i, OTHER_KEY) for i in later] == ["dead", "dead"]
    for job_id in first:
        gone = requests.get(
            f"{server}/status/{job_id}", headers={"X-API-Key": OTHER_KEY}, timeout=10
        )
        assert gone.status_code == 404


def test_a_malformed_job_link_says_not_found(browser: Any, server: str) -> None:
    """`#/job/%E0` made decodeURIComponent throw: the view stayed blank."""
    sign_in(browser, server)
    go(browser, server, "#/job/%E0%A4%A")
    until(browser, lambda d: d.find_element("css selector", "#app h1").text == "Job")
    until(browser, lambda d: "job not found" in d.find_element("id", "status").text)


@pytest.mark.parametrize(
    ("hash_", "said"),
    [
        ("#/job/" + quote(XSS["bare"], safe=""), "job not found"),
        ("#/job/" + quote(XSS["script"], safe=""), "job not found"),
        ("#/jobs?" + urlencode({"find": XSS["script"], "queue": XSS["bare"]}), "'queue'"),
        ("#/jobs?" + urlencode({"state": XSS["svg"], "type": XSS["link"]}), "'state'"),
        ("#/dead?" + urlencode({"cursor": XSS["close"]}), "invalid cursor"),
        ("#/" + quote(XSS["bare"], safe=""), None),
    ],
)
def test_a_hostile_dashboard_link_runs_nothing(
    browser: Any, server: str, hash_: str, said: str | None
) -> None:
    """A link someone sends a signed-in user: what it carries goes into filter boxes,
    requests and error messages, each as text."""
    sign_in(browser, server)
    go(browser, server, hash_)
    if said is not None:
        until(browser, lambda d: said in d.find_element("id", "status").text)
    else:
        css(browser, "#totals .stat")  # an unknown view: the overview
    no_script_ran(browser)


def test_a_key_a_header_cannot_carry_is_refused_with_a_reason(browser: Any, server: str) -> None:
    """Before: fetch()'s own TypeError ("String contains non ISO-8859-1 code point")."""
    browser.get(f"{server}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server}/ui")
    css(browser, "#api-key")
    browser.execute_script("document.getElementById('api-key').value = 'ключ-0123456789'")
    click(browser, "#sign-in-button")
    until(browser, lambda d: d.find_element("id", "sign-in-error").is_displayed())
    assert "visible ASCII" in text_of(browser, "#sign-in-error")
    assert browser.execute_script("return sessionStorage.length") == 0


def test_dead_letters_keep_their_buttons_focus_and_checks_while_jobs_keep_dying(
    browser: Any, server: str
) -> None:
    """The page redrew its buttons, rows and pager as new nodes each time the list
    moved: with jobs dying steadily most clicks were lost (the node went before the
    release), the focus fell to the page, and a checked job pushed off the page was
    unchecked unseen."""

    def dead_jobs(n: int) -> list[str]:
        ids = [
            enqueue(
                server, {"type": "fail", "payload": {"always": True}, "max_attempts": 1}, BUSY_KEY
            )
            for _ in range(n)
        ]
        until(browser, lambda d: all(state_of(server, i, BUSY_KEY) == "dead" for i in ids))
        return ids

    sign_in(browser, server, BUSY_KEY)
    first = dead_jobs(3)
    go(browser, server, "#/dead")
    until(browser, lambda d: len(all_css(d, "#dead input.pick")) == 3)
    click(browser, f"#dead tr[data-id='{first[0]}'] input.pick")
    browser.execute_script(
        "window.__button = document.getElementById('redrive-all');"
        'window.__row = document.querySelector("#dead tr[data-id=\'" + arguments[0] + "\']");'
        "window.__button.focus();",
        first[0],
    )
    dead_jobs(2)
    until(browser, lambda d: "(5)" in d.find_element("id", "redrive-all").text)
    kept = browser.execute_script(
        "return [document.getElementById('redrive-all') === window.__button,"
        " document.activeElement === window.__button, window.__row.isConnected,"
        " window.__row.querySelector('input.pick').checked]"
    )
    assert kept == [True, True, True, True]
    assert text_of(browser, "#redrive-selected") == "Redrive selected (1)"
    click(browser, "#purge-all")  # the question takes the focus, on its safe button
    assert browser.execute_script("return document.activeElement.id") == "confirm-no"
    browser.execute_script(
        "document.getElementById('confirm').dispatchEvent("
        "new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))"
    )
    until(browser, lambda d: not all_css(d, "#confirm"))
    assert browser.execute_script("return document.activeElement.id") == "purge-all"
    assert state_of(server, first[0], BUSY_KEY) == "dead"  # Escape did nothing else


def test_direction_overrides_in_a_payload_are_shown_not_obeyed(browser: Any, server: str) -> None:
    """U+202E in a payload reversed the text after it as shown (an address read
    backwards); it is shown as its escape."""
    sign_in(browser, server)
    job_id = enqueue(server, {"type": "echo", "payload": {"to": "user\u202efdp.exe"}})
    go(browser, server, f"#/job/{job_id}")
    until(browser, lambda d: "user\\u202Efdp.exe" in d.find_element("id", "job-payload").text)
