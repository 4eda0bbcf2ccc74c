"""A dashboard action confirmed under one key never goes on under another.

Was (stop 55, found in headless chromium against `spool serve` on SQLite): "Purge
all" goes through in steps of 5,000 (ui_routes.ALL_PER_REQUEST), and app.js read
the API key from sessionStorage afresh for every step. Signing out while the
steps ran and signing in with another tenant's key (no reload: the sign-out
button and the sign-in form) let the loop go on with the new key: tenant B's
dead jobs were purged by a confirmation that said "Purge 5001 dead jobs?" on
tenant A's page, which B never saw.

Now every step of an action carries the key it was confirmed under, and a step
whose key is no longer the signed-in one is not sent: the action stops, and the
page asks for a key as after any sign-out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.procs import guarded_env, serving_url
from tests.test_ui_browser import (
    _require_chromium,
    browser,
    click,
    css,
    sign_in,
    text_of,
    until,
)

__all__ = ["browser"]  # the fixture, used here against this module's server

KEY_A, KEY_B = "s55i-key-a-0123456789", "s55i-key-b-9876543210"
STEPPED = 5001  # one more than a step (ALL_PER_REQUEST): "all" takes two requests

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s55i") / "spool.db"


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[str]:
    _require_chromium()
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_API_KEYS=f"{KEY_A}=s55i-a,{KEY_B}=s55i-b",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_LOG_LEVEL="WARNING",
    )
    with serving_url("--threads", "8", env=env) as url:
        yield url


def dead_jobs(server: str, db: Path, key: str, n: int) -> list[str]:
    """N jobs of KEY's tenant, made dead in the store (no worker runs them: delayed)."""
    ids: list[str] = []
    while len(ids) < n:
        batch = [
            {"type": "echo", "payload": {"i": len(ids) + i}, "delay": 3600}
            for i in range(min(100, n - len(ids)))
        ]
        reply = requests.post(
            f"{server}/enqueue", json={"jobs": batch}, headers={"X-API-Key": key}, timeout=30
        )
        assert reply.status_code == 201, reply.text
        ids += [job["id"] for job in reply.json()["jobs"]]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "UPDATE jobs SET state = 'dead', finished_at = updated_at WHERE id = ?",
            [(i,) for i in ids],
        )
    return ids


def alive(server: str, key: str, ids: list[str]) -> list[str]:
    return [
        i
        for i in ids
        if requests.get(f"{server}/status/{i}", headers={"X-API-Key": key}, timeout=10).status_code
        == 200
    ]


# Holds the first purge step's answer until the test opens the gate, and records the
# key each step was sent with.
HOLD_FIRST_STEP = """
window.__steps = [];
window.__gate = new Promise((resolve) => { window.__open = resolve; });
const real = window.fetch;
window.fetch = async (url, init) => {
  if (!String(url).includes('/dead/purge')) return real(url, init);
  window.__steps.push(init.headers['X-API-Key']);
  const answer = await real(url, init);
  if (window.__steps.length !== 1) return answer;
  await window.__gate;
  // Once the page has read this answer, the loop decides on its next step in
  // microtasks: a timer set then fires after that decision (and any next fetch call).
  const json = answer.json.bind(answer);
  answer.json = async () => {
    const data = await json();
    setTimeout(() => { window.__settled = true; }, 0);
    return data;
  };
  return answer;
};
"""


def test_a_purge_all_stops_when_its_key_signs_out(browser: Any, server: str, db: Path) -> None:
    mine = dead_jobs(server, db, KEY_A, STEPPED)
    theirs = dead_jobs(server, db, KEY_B, 3)
    sign_in(browser, server, KEY_A)
    browser.execute_script("location.hash = '#/dead'")
    until(browser, lambda d: f"({STEPPED})" in d.find_element("id", "purge-all").text)
    browser.execute_script(HOLD_FIRST_STEP)
    click(browser, "#purge-all")
    assert text_of(browser, "#confirm-message").startswith(f"Purge {STEPPED} dead jobs?")
    click(browser, "#confirm-yes")
    until(browser, lambda d: d.execute_script("return window.__steps.length") == 1)

    # While the first step's answer is on its way: sign out, sign in as B (no reload).
    click(browser, "#sign-out")
    box = css(browser, "#api-key")
    box.send_keys(KEY_B)
    click(browser, "#sign-in-button")
    until(browser, lambda d: "(3)" in d.find_element("id", "purge-all").text)  # B's page
    browser.execute_script("window.__open()")

    until(browser, lambda d: d.execute_script("return window.__settled === true"))
    steps = browser.execute_script("return window.__steps")
    assert set(steps) == {KEY_A}, "a step of A's purge was sent with B's key"
    assert alive(server, KEY_B, theirs) == theirs, "B's dead jobs were purged by A's confirmation"
    assert len(alive(server, KEY_A, mine)) == STEPPED - 5000  # A's first step went through
    assert "(3)" in text_of(browser, "#purge-all")  # B stays signed in, on B's page
