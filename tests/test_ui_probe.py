"""The dashboard's JSON routes probed from outside: a real `spool serve` over a socket
(SQLite, the emulated worker), with what an attacker or a careless caller sends.

Each test here failed before the fix it names. The routes' ordinary behaviour is in
tests/test_ui_api.py; the page in a browser in tests/test_ui_browser.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.apikit import API_KEYS, KEY_A, KEY_B, OPERATOR_KEY
from tests.procs import guarded_env, spool_serve_logged, stop

SYSTEM_KEY = "key-sys-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The server's URL and the file its log lines go to."""
    folder = tmp_path_factory.mktemp("ui-probe")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=operator",
        SPOOL_DEMO_HANDLERS="true",
    )
    log = folder / "serve.log"
    child = spool_serve_logged(log, "--threads", "4", env=env)
    try:
        yield child.url, log
    finally:
        stop(child.proc)


@pytest.fixture(scope="module")
def server(served: tuple[str, Path]) -> str:
    return served[0]


def call(server: str, method: str, path: str, key: str | None = KEY_A, **kw: Any) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.request(method, server + path, headers=headers, timeout=30, **kw)


def dead_jobs(server: str, n: int, queue: str, key: str = KEY_A) -> list[str]:
    """n jobs of their own queue, dead after one attempt (waited for)."""
    job = {"type": "fail", "payload": {"always": True}, "max_attempts": 1, "queue": queue}
    reply = call(server, "POST", "/enqueue", key, json={"jobs": [job] * n})
    assert reply.status_code == 201, reply.text
    ids = [j["id"] for j in reply.json()["jobs"]]
    for job_id in ids:
        state = call(server, "GET", f"/status/{job_id}?wait=20", key).json()["state"]
        assert state == "dead", state
    return ids


def dead_in(server: str, queue: str, key: str = KEY_A) -> set[str]:
    reply = call(server, "GET", f"/ui/api/jobs?state=dead&queue={queue}&limit=200", key)
    return {j["id"] for j in reply.json()["jobs"]}


def fresh_queue() -> str:
    return "q-" + uuid.uuid4().hex[:12]


# -- "all" acts on no more jobs than the confirmation said ---------------------------------


@pytest.mark.parametrize("verb", ["purge", "redrive"])
def test_an_all_action_stops_at_max(server: str, verb: str) -> None:
    """The page's "Purge all (3)" sends max=3: a job that died after the dialog opened
    is left alone. Before: max was refused (422) and "all" took every dead job."""
    queue = fresh_queue()
    ids = dead_jobs(server, 5, queue)
    body = {"all": True, "queue": queue, "max": 3}
    reply = call(server, "POST", f"/ui/api/dead/{verb}", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["done"] == 3 and reply.json()["more"] is True
    acted = set(reply.json()["ids"])
    assert len(acted) == 3 and acted <= set(ids)
    if verb == "redrive":  # they die again (always=True); wait so the count is settled
        for job_id in acted:
            call(server, "GET", f"/status/{job_id}?wait=20")
    else:
        assert dead_in(server, queue) == set(ids) - acted
    rest = call(server, "POST", f"/ui/api/dead/{verb}", json={**body, "max": 1000})
    assert rest.json()["done"] == (2 if verb == "purge" else 5) and rest.json()["more"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"all": True, "max": 0},
        {"all": True, "max": -1},
        {"all": True, "max": "2"},
        {"all": True, "max": 1.5},
        {"all": True, "max": True},
        {"all": True, "max": None, "extra": 1},
        {"ids": ["j_" + "0" * 32], "max": 1},
    ],
)
def test_a_bad_max_is_a_4xx_and_changes_nothing(server: str, body: dict[str, Any]) -> None:
    queue = fresh_queue()
    ids = dead_jobs(server, 1, queue)
    for verb in ("purge", "redrive"):
        reply = call(server, "POST", f"/ui/api/dead/{verb}", json={**body, "queue": queue})
        assert 400 <= reply.status_code < 500, (body, reply.status_code)
        assert reply.json()["error"]["message"]
    assert dead_in(server, queue) == set(ids)


# -- keys -------------------------------------------------------------------------------------


def test_an_operator_key_is_told_the_dashboard_needs_a_tenant_key(server: str) -> None:
    """Before: "invalid API key", for a key that is valid, just not for this."""
    for method, path in [
        ("GET", "/ui/api/overview"),
        ("GET", "/ui/api/jobs"),
        ("POST", "/ui/api/dead/purge"),
    ]:
        reply = call(server, method, path, OPERATOR_KEY, json={"all": True})
        assert reply.status_code == 403, (path, reply.text)
        message = reply.json()["error"]["message"]
        assert "operator key" in message and "SPOOL_API_KEYS" in message
        assert OPERATOR_KEY not in reply.text
    assert call(server, "GET", "/metrics", OPERATOR_KEY).status_code == 200  # still opens that
    wrong = call(server, "GET", "/ui/api/overview", "not-a-key-anywhere")
    assert wrong.status_code == 401 and "operator" not in wrong.text


def test_another_tenants_dead_jobs_are_not_touched_by_all(server: str) -> None:
    queue = fresh_queue()
    theirs = dead_jobs(server, 2, queue, key=KEY_B)
    for verb in ("purge", "redrive"):
        reply = call(server, "POST", f"/ui/api/dead/{verb}", json={"all": True, "queue": queue})
        assert reply.json() == {"done": 0, "ids": [], "more": False}
    assert dead_in(server, queue, KEY_B) == set(theirs)


# -- headers ----------------------------------------------------------------------------------


def test_json_answers_carry_nosniff_and_a_csp(server: str) -> None:
    """They hold attacker-controlled strings: no browser may read one as a page.
    Before: only the page and its files carried these headers."""
    job = {"type": "echo", "payload": {"x": "<script>alert(1)</script>"}, "delay": 600}
    job_id = call(server, "POST", "/enqueue", json=job).json()["id"]
    for path in ["/ui/api/overview", "/ui/api/jobs", f"/ui/api/jobs/{job_id}"]:
        reply = call(server, "GET", path)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
        assert reply.headers["Cache-Control"] == "no-store"


# -- size ---------------------------------------------------------------------------------------


def test_the_overview_lists_the_busiest_queues_and_counts_them_all(server: str) -> None:
    """Queue names are the client's: 5,000 of them made every one-second poll of the
    overview 2.8 MB and a third of a second of server time. Before: every queue listed."""
    tag = uuid.uuid4().hex[:8]
    for start in range(0, 250, 100):
        jobs = [
            {"type": "echo", "payload": {}, "queue": f"a-{tag}-{n}", "delay": 3600}
            for n in range(start, min(start + 100, 250))
        ]
        assert call(server, "POST", "/enqueue", KEY_B, json={"jobs": jobs}).status_code == 201
    busy = {"type": "echo", "payload": {}, "queue": f"z-{tag}", "delay": 3600}
    assert call(server, "POST", "/enqueue", KEY_B, json={"jobs": [busy] * 3}).status_code == 201
    data = call(server, "GET", "/ui/api/overview", KEY_B).json()
    names = [q["queue"] for q in data["queues"]]
    assert len(names) == 200 and names == sorted(names)
    assert data["queues_total"] >= 251
    assert f"z-{tag}" in names  # the busiest, though its name sorts last
    assert data["totals"]["queued"] >= 253  # the totals count the queues not listed too


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_in_name_value_lists_and_short_keys_are_masked(server: str) -> None:
    """HAR, Kubernetes and AWS name a header or variable in one field and hold its value
    in another; "pass", "pw" and "passphrase" name passwords too. Before: all shown."""
    payload = {
        "har": {"headers": [{"name": "Authorization", "value": "Basic c2VjcmV0LTE="}]},
        "k8s": {"env": [{"name": "DB_PASSWORD", "value": "secret-2"}]},
        "aws": {"Environment": [{"Name": "API_KEY", "Value": "secret-3"}]},
        "keyed": [{"key": "X-Session-Id", "value": "secret-4"}],
        "short": {"pass": "secret-5", "pw": "secret-6", "passphrase": "secret-7"},
        "kept": [{"name": "Accept", "value": "json"}, {"passenger": "Ada", "pwm": 7}],
    }
    job = {"type": "echo", "payload": payload, "delay": 600}
    job_id = call(server, "POST", "/enqueue", json=job).json()["id"]
    shown = call(server, "GET", f"/ui/api/jobs/{job_id}").json()["payload"]
    text = str(shown)
    assert not any(f"secret-{n}" in text for n in range(2, 8)), text
    assert "c2VjcmV0LTE=" not in text
    assert shown["har"]["headers"] == [{"name": "Authorization", "value": "***"}]
    assert shown["kept"] == payload["kept"]  # not every name/value pair is a secret


def test_a_payload_of_guesses_does_not_tell_which_are_keys(server: str) -> None:
    """Was an oracle: tenant B enqueued a payload of candidate strings and read it back
    here; every candidate shown as *** was a configured secret (tenant A's key, the
    operator's key), 20,000 guesses a request and no failed authentication."""
    guesses = [KEY_A, OPERATOR_KEY, "not-a-key-1", "not-a-key-2"]
    payload = {"guesses": guesses, "db_pass": "hunter2", "pass_word": "hunter3"}
    job = {"type": "echo", "payload": payload, "delay": 600}
    job_id = call(server, "POST", "/enqueue", KEY_B, json=job).json()["id"]
    shown = call(server, "GET", f"/ui/api/jobs/{job_id}", KEY_B).json()["payload"]
    assert shown["guesses"] == guesses
    assert shown["db_pass"] == shown["pass_word"] == "***"  # names still mask what they hold


# -- logs ------------------------------------------------------------------------------------------


def test_control_characters_in_a_job_id_do_not_reach_the_log_raw(served: tuple[str, Path]) -> None:
    """A job id is the client's text: NUL and a terminal escape went into the server's
    log line as they were (an ANSI sequence recolours or rewrites the operator's screen)."""
    server, log = served
    marker = uuid.uuid4().hex
    for path in (f"/ui/api/jobs/{marker}%1b%5b2J", f"/ui/api/jobs/{marker}%00/cancel"):
        method = "POST" if path.endswith("/cancel") else "GET"
        assert call(server, method, path).status_code == 404
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        lines = [x for x in log.read_text(errors="replace").splitlines() if marker in x]
        time.sleep(0.05)
    assert len(lines) == 2, lines
    assert not any(c in line for line in lines for c in "\x1b\x00"), lines
    assert f"{marker}\\u001b[2J" in lines[0] and f"{marker}\\u0000" in lines[1]


# -- configuration ---------------------------------------------------------------------------------


def test_a_malformed_schedules_setting_is_a_503_that_names_no_setting(tmp_path: Path) -> None:
    """Before: a 500 and a traceback in the log on every visit to the Schedules page.
    (`spool serve` with its worker refuses to start on such a value; the API alone, as
    on Lambda or with --no-worker, starts, and its page answers this.)"""
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{API_KEYS},{SYSTEM_KEY}=_system",
        SPOOL_SCHEDULES='[{"name": "nightly", "type": "echo", "every": -1}]',
    )
    log = tmp_path / "serve.log"
    child = spool_serve_logged(log, "--threads", "2", "--no-worker", env=env)
    try:
        reply = call(child.url, "GET", "/ui/api/schedules", SYSTEM_KEY)
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "misconfigured"
        assert "SPOOL_SCHEDULES" not in reply.text  # the tenant is not told the config
        assert call(child.url, "GET", "/ui/api/overview").status_code == 200  # the rest works
        # Another tenant is told nothing of the operator's schedules, not even that.
        assert call(child.url, "GET", "/ui/api/schedules").json()["schedules"] == []
    finally:
        stop(child.proc)
    text = log.read_text(errors="replace")
    assert "the dashboard cannot list schedules: SPOOL_SCHEDULES[0] is invalid" in text
    assert "Traceback" not in text


# -- query parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        [("state", "dead"), ("state", "queued")],
        [("limit", "1"), ("limit", "200")],
        [("find", "a"), ("find", "b")],
        [("queue", "x"), ("state", "dead"), ("queue", "y")],
    ],
)
def test_a_repeated_query_parameter_is_a_400_naming_it(
    server: str, params: list[tuple[str, str]]
) -> None:
    """Before: the last value won silently ("?state=dead&state=queued" listed queued jobs)."""
    reply = call(server, "GET", "/ui/api/jobs", params=params)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    name = next(k for k, _ in params if sum(1 for j, _ in params if j == k) > 1)
    assert "once" in error["message"] and error["details"]["repeated"] == [name]
