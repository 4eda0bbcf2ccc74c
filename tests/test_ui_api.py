"""The dashboard's routes through app.py (chalice's test client, a real SQLite file):
the page and its headers, tenancy, every JSON read, the actions, and bad input.

The browser tests (tests/test_ui_browser.py) drive the same routes from Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.runtime import Runtime
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for
from tests.factories import stored
from tests.handed_jobs import count_handed

DEAD_JOB = {"type": "fail", "payload": {"always": True, "message": "boom"}, "max_attempts": 1}


def run_due(rt: Runtime) -> None:
    worker = rt.worker(2)
    try:
        worker.drain()
    finally:
        worker.close()


def dead_jobs(api: Api, rt: Runtime, n: int, key: str = KEY_A) -> list[str]:
    ids = [api.enqueue(DEAD_JOB, key=key) for _ in range(n)]
    run_due(rt)
    return ids


# -- the page and its files ------------------------------------------------------------


def test_the_page_is_a_shell_with_a_strict_csp_and_relative_urls(api: Api) -> None:
    reply = api.get("/ui", key=None)
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    csp = reply.header("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert reply.header("X-Content-Type-Options") == "nosniff"
    html = reply.body.decode()
    assert "<script>" not in html and " style=" not in html  # no inline script or style
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert urls == ["ui/static/app.css", "ui/static/app.js"]  # relative: works under /api/ui
    assert "Set-Cookie" not in {k.title() for k in reply.headers}


def test_a_trailing_slash_is_sent_to_the_page(api: Api) -> None:
    """At /ui/ the page's relative URLs would point under /ui/ui/: it redirects instead."""
    reply = api.get("/ui/", key=None)
    assert reply.status == 308 and reply.header("Location") == "../ui"


def test_static_files_by_exact_name_only(api: Api) -> None:
    js = api.get("/ui/static/app.js", key=None)
    assert js.status == 200
    assert js.header("Content-Type") == "text/javascript; charset=utf-8"
    assert b"innerHTML" not in js.body and b"eval(" not in js.body
    css = api.get("/ui/static/app.css", key=None)
    assert css.status == 200 and css.header("Content-Type") == "text/css; charset=utf-8"
    for name in ("nope.js", "..%2F..%2Fapp.py", "%2e%2e", "app.js%00", "APP.JS"):
        missing = api.get(f"/ui/static/{name}", key=None)
        assert missing.status == 404, name
        assert missing.json["error"]["code"] == "not_found"


# -- keys and tenants --------------------------------------------------------------------

UI_READS = ["/ui/api/overview", "/ui/api/jobs", "/ui/api/schedules", "/ui/api/jobs/j_" + "0" * 32]
UI_WRITES = [
    "/ui/api/jobs/j_" + "0" * 32 + "/cancel",
    "/ui/api/jobs/j_" + "0" * 32 + "/redrive",
    "/ui/api/dead/redrive",
    "/ui/api/dead/purge",
]


@pytest.mark.parametrize("key", [None, "", "wrong-key-000"])
def test_every_json_route_needs_a_tenant_key(api: Api, key: str | None) -> None:
    for path in UI_READS:
        assert api.get(path, key=key).status == 401, path
    for path in UI_WRITES:
        assert api.post(path, {"all": True}, key=key).status == 401, path


def test_a_tenant_sees_and_touches_only_its_own_jobs(api: Api, rt: Runtime) -> None:
    [mine] = dead_jobs(api, rt, 1, key=KEY_A)
    delayed = api.enqueue({"type": "echo", "payload": {}, "delay": 600}, key=KEY_A)
    theirs = api.get("/ui/api/overview", key=KEY_B).json
    assert theirs["queues"] == [] and theirs["totals"]["dead"] == 0
    assert api.get("/ui/api/jobs", key=KEY_B).json["jobs"] == []
    assert api.get(f"/ui/api/jobs?find={mine}", key=KEY_B).json["jobs"] == []
    assert api.get(f"/ui/api/jobs/{mine}", key=KEY_B).status == 404
    assert api.post(f"/ui/api/jobs/{mine}/redrive", key=KEY_B).status == 404
    assert api.post(f"/ui/api/jobs/{delayed}/cancel", key=KEY_B).status == 404
    assert api.post("/ui/api/dead/redrive", {"ids": [mine]}, key=KEY_B).json["done"] == 0
    assert api.post("/ui/api/dead/purge", {"all": True}, key=KEY_B).json["done"] == 0
    assert rt.store.get(mine) is not None and stored(rt.store, mine).state.value == "dead"
    assert stored(rt.store, delayed).state.value == "queued"


# -- overview ----------------------------------------------------------------------------


def test_overview_counts_ages_throughput_and_workers(api: Api, rt: Runtime) -> None:
    for _ in range(3):
        api.enqueue({"type": "echo", "payload": {}, "queue": "mail"})
    dead_jobs(api, rt, 2)  # also runs the three echoes
    api.enqueue({"type": "echo", "payload": {}, "queue": "mail", "delay": 300})
    api.enqueue({"type": "echo", "payload": {}, "queue": "later"})
    rt.store.beat("host-a:1", ["mail"], rt.store.clock.now())
    rt.store.beat("host-b:2", None, rt.store.clock.now())
    data = api.get("/ui/api/overview").json
    queues = {q["queue"]: q for q in data["queues"]}
    assert set(queues) == {"mail", "default", "later"}
    assert queues["mail"]["states"] == {
        "queued": 1,
        "running": 0,
        "retrying": 0,
        "succeeded": 3,
        "dead": 0,
        "cancelled": 0,
    }
    assert queues["default"]["states"]["dead"] == 2
    assert data["totals"]["succeeded"] == 3 and data["totals"]["dead"] == 2
    assert data["totals"]["queued"] == 2
    assert queues["mail"]["oldest_due_seconds"] is None  # its waiting job is delayed
    assert queues["later"]["oldest_due_seconds"] >= 0
    assert queues["mail"]["succeeded_last_hour"] == 3
    assert queues["default"]["failed_last_hour"] == 2
    assert len(data["throughput"]) == 60 and data["throughput"][-1] == [3, 2]
    live = rt.store.live_workers(data["workers"]["within_seconds"])  # ours and the drain's
    assert data["workers"]["live"] == len(live) >= 2
    assert queues["mail"]["workers"] == queues["later"]["workers"] + 1  # host-a serves mail
    assert "host-a" not in str(data)  # worker names are not shown to tenants


# -- lists --------------------------------------------------------------------------------


def test_jobs_list_filters_finds_and_pages_newest_first(api: Api, rt: Runtime) -> None:
    ids = [api.enqueue({"type": "echo", "payload": {"i": i}, "delay": 60}) for i in range(7)]
    keyed = api.enqueue({"type": "echo", "payload": {}, "idempotency_key": "order-42"})
    [dead] = dead_jobs(api, rt, 1)
    seen: list[str] = []
    cursor = None
    while True:
        query = "state=queued&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(f"/ui/api/jobs?{query}").json
        assert all(j["state"] == "queued" for j in page["jobs"])
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # the keyed one ran (succeeded); newest first
    assert [j["id"] for j in api.get("/ui/api/jobs?state=dead").json["jobs"]] == [dead]
    assert [j["id"] for j in api.get("/ui/api/jobs?find=order-42").json["jobs"]] == [keyed]
    assert [j["id"] for j in api.get(f"/ui/api/jobs?find={dead}").json["jobs"]] == [dead]
    assert api.get("/ui/api/jobs?find=nothing-like-it").json["jobs"] == []
    row = api.get("/ui/api/jobs?type=fail").json["jobs"][0]
    assert "payload" not in row and row["error"] == "RuntimeError: boom (attempt 1)"


def test_find_takes_a_key_exactly_before_it_trims_one_pasted_with_spaces(api: Api) -> None:
    """Find trimmed what it was given before looking it up: a job whose idempotency key
    ends in a space could not be found, and asking for it answered the job of the key
    without the space, another job. The key as given is looked up first."""
    plain = api.enqueue({"type": "echo", "payload": {}, "idempotency_key": "order-7"})
    spaced = api.enqueue({"type": "echo", "payload": {}, "idempotency_key": "order-7 "})

    def found(needle: str) -> list[str]:
        return [j["id"] for j in api.get(f"/ui/api/jobs?find={quote(needle)}").json["jobs"]]

    assert found("order-7 ") == [spaced]
    assert found("order-7") == [plain]
    assert found("  order-7\t") == [plain]  # pasted with blanks around it: still found
    assert found(f" {plain} ") == [plain]


def test_a_cursor_of_one_order_is_refused_by_the_listing_in_the_other(api: Api) -> None:
    """GET /jobs and GET /dlq list oldest first, the dashboard newest first: a cursor of
    one read by the other named the jobs on the wrong side of its place (a /jobs cursor
    gave the dashboard the jobs already seen, or an empty page), without an error.
    Either way round it is a 400 that says so, and each listing still takes its own."""
    for i in range(5):
        api.enqueue({"type": "echo", "payload": {"i": i}, "delay": 60})
    oldest_first = api.get("/jobs?limit=2").json["next_cursor"]
    newest_first = api.get("/ui/api/jobs?limit=2").json["next_cursor"]
    assert oldest_first and newest_first
    assert len(api.get(f"/jobs?limit=2&cursor={oldest_first}").json["jobs"]) == 2
    assert len(api.get(f"/ui/api/jobs?limit=2&cursor={newest_first}").json["jobs"]) == 2
    for path, cursor in [
        ("/ui/api/jobs", oldest_first),
        ("/jobs", newest_first),
        ("/dlq", newest_first),
    ]:
        reply = api.get(f"{path}?cursor={cursor}")
        assert reply.status == 400, (path, reply.json)
        error = reply.json["error"]
        assert error["code"] == "bad_request" and "order" in error["message"], error
        assert error["details"] == {"cursor": cursor}


@pytest.mark.parametrize(
    "query",
    [
        "state=exploded",
        "limit=0",
        "limit=201",
        "limit=ten",
        "queue=bad%20name",
        "type=%3Cscript%3E",
        "cursor=%%%",
        "cursor=bm90LWEtY3Vyc29y",
        "surprise=1",
        "find=",
    ],
)
def test_bad_list_queries_are_4xx_with_a_message(api: Api, query: str) -> None:
    reply = api.get(f"/ui/api/jobs?{query}")
    assert 400 <= reply.status < 500, (query, reply.status)
    assert reply.json["error"]["message"]


# -- one job --------------------------------------------------------------------------------


def test_job_detail_masks_secrets_and_shows_attempts(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue(
        {
            "type": "fail",
            "payload": {
                "always": True,
                "message": "login failed for postgresql://app:hunter22@db/x Bearer abc.def.ghi",
            },
            "max_attempts": 1,
        }
    )
    secret = api.enqueue(
        {
            "type": "echo",
            "payload": {
                "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "text/html"},
                "smtp": {"password": "hunter2", "user": "me"},
                "pairs": [["X-Api-Key", "k-123456"], ["Accept", "json"]],
                "note": "<img src=x onerror=alert(1)>",
            },
            "delay": 60,
        }
    )
    run_due(rt)
    shown = api.get(f"/ui/api/jobs/{secret}").json
    assert shown["payload"]["headers"] == {"Authorization": "***", "Accept": "text/html"}
    assert shown["payload"]["smtp"] == {"password": "***", "user": "me"}
    assert shown["payload"]["pairs"] == [["X-Api-Key", "***"], ["Accept", "json"]]
    assert shown["payload"]["note"] == "<img src=x onerror=alert(1)>"  # kept; the page escapes it
    assert shown["can_cancel"] and not shown["can_redrive"] and shown["attempt_history"] == []
    died = api.get(f"/ui/api/jobs/{job_id}").json
    assert died["state"] == "dead" and died["can_redrive"] and not died["can_cancel"]
    assert "hunter22" not in str(died) and "abc.def.ghi" not in str(died)
    [attempt] = died["attempt_history"]
    assert attempt["outcome"] == "dead" and attempt["error_type"] == "RuntimeError"
    assert "RuntimeError" in attempt["traceback"] and "hunter22" not in attempt["traceback"]
    assert died["timings"]["ran_seconds"] >= 0 and died["timings"]["total_seconds"] >= 0


def test_cancel_and_redrive_from_the_job_page(api: Api, rt: Runtime) -> None:
    delayed = api.enqueue({"type": "echo", "payload": {}, "delay": 600})
    [dead] = dead_jobs(api, rt, 1)
    cancelled = api.post(f"/ui/api/jobs/{delayed}/cancel")
    assert cancelled.status == 200 and cancelled.json["state"] == "cancelled"
    again = api.post(f"/ui/api/jobs/{delayed}/cancel")
    assert again.status == 409 and again.json["error"]["message"]
    redriven = api.post(f"/ui/api/jobs/{dead}/redrive")
    assert redriven.json["state"] == "queued" and redriven.json["attempts"] == 0
    assert api.post(f"/ui/api/jobs/{dead}/redrive").status == 409
    assert api.get("/ui/api/jobs/not-an-id").status == 404


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letters_redrive_some_then_purge_all(api: Api, rt: Runtime) -> None:
    ids = dead_jobs(api, rt, 5)
    some = api.post("/ui/api/dead/redrive", {"ids": ids[:2] + ids[:1]})
    assert some.status == 200 and some.json["done"] == 2 and not some.json["more"]
    assert {stored(rt.store, i).state.value for i in ids[:2]} == {"queued"}
    purged = api.post("/ui/api/dead/purge", {"all": True})
    assert purged.json["done"] == 3 and not purged.json["more"]
    assert all(rt.store.get(i) is None for i in ids[2:])
    assert rt.store.get(ids[0]) is not None  # a queued job is never purged
    assert api.get("/ui/api/overview").json["totals"]["dead"] == 0


def test_redrive_all_of_one_queue(api: Api, rt: Runtime) -> None:
    mail = [api.enqueue({**DEAD_JOB, "queue": "mail"}) for _ in range(2)]
    other = api.enqueue(DEAD_JOB)
    run_due(rt)
    reply = api.post("/ui/api/dead/redrive", {"all": True, "queue": "mail"})
    assert reply.json["done"] == 2 and sorted(reply.json["ids"]) == sorted(mail)
    assert stored(rt.store, other).state.value == "dead"


BAD_ACTIONS: list[Any] = [
    {},
    {"ids": [], "all": False},
    {"ids": ["j_" + "0" * 32], "all": True},
    {"ids": ["not-a-job-id"]},
    {"ids": "j_" + "0" * 32},
    {"ids": [1]},
    {"ids": ["j_" + "0" * 32] * 1001},
    {"ids": ["j_" + "0" * 32], "queue": "mail"},
    {"all": "yes"},
    {"all": True, "queue": "bad name"},
    {"all": True, "surprise": 1},
    [],
    "all",
    None,
]


@pytest.mark.parametrize("verb", ["redrive", "purge"])
def test_bad_dead_letter_actions_change_nothing(api: Api, rt: Runtime, verb: str) -> None:
    ids = dead_jobs(api, rt, 2)
    for body in BAD_ACTIONS:
        reply = api.post(f"/ui/api/dead/{verb}", body)
        assert 400 <= reply.status < 500, (body, reply.status)
        assert reply.json["error"]["message"]
    for raw in (b"{", b"\xff\xfe", b'{"all": NaN}', b"x" * 70_000):
        reply = api.call("POST", f"/ui/api/dead/{verb}", raw=raw)
        assert 400 <= reply.status < 500, (raw[:10], reply.status)
    assert {stored(rt.store, i).state.value for i in ids} == {"dead"}


# -- schedules ---------------------------------------------------------------------------------

SCHEDULES = '[{"name": "nightly", "type": "echo", "every": 60, "payload": {"n": 1}}]'


@pytest.fixture
def sched_api(tmp_path) -> Iterator[tuple[Api, Runtime]]:
    from chalice.test import Client

    import app as spool_app

    settings = settings_for(
        tmp_path,
        api_keys=f"{KEY_A}=tenant-a,sys-key-0123456789=_system",
        extra={"SPOOL_SCHEDULES": SCHEDULES},
    )
    with installed(settings) as rt, Client(spool_app.app, stage_name="local") as client:
        yield Api(client), rt


def test_schedules_show_next_run_and_last_jobs_to_the_system_tenant(
    sched_api: tuple[Api, Runtime],
) -> None:
    from datetime import UTC, datetime

    from chalicelib import periodic
    from chalicelib.clock import FakeClock

    api, rt = sched_api
    # Mid-minute and held there: on the wall clock, a tick falling between the firing
    # and the read (at hh:mm:00) made the latest run one that had not fired yet.
    rt.store.clock = FakeClock(datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC))
    periodic.fire_due(rt.service, rt.registry, rt.store.clock, settings=rt.settings)
    tenant_view = api.get("/ui/api/schedules").json
    # Was: every tenant's key listed the operator's schedules (name, type, queue, cadence).
    assert tenant_view == {"schedules": [], "jobs_visible": False, "system_tenant": "_system"}
    system = api.get("/ui/api/schedules", key="sys-key-0123456789").json
    [row] = system["schedules"]
    assert (row["name"], row["type"], row["when"]) == ("nightly", "echo", "every 60s")
    assert row["next_run"] and system["jobs_visible"] and len(row["last_runs"]) == 5
    latest = row["last_runs"][0]
    assert latest["job"] is not None and latest["job"]["type"] == "echo"
    assert all(r["job"] is None for r in row["last_runs"][1:])  # older ticks never fired


@pytest.mark.slow
def test_the_dashboard_under_chalice_local(tmp_path) -> None:
    """`chalice local` serves the page, its files and its JSON as `spool serve` does."""
    import os
    import time

    import requests

    from tests.procs import stop
    from tests.test_chalice_local import free_port, start_chalice_local

    port = free_port()
    proc = start_chalice_local(tmp_path, port, {**os.environ, "SPOOL_API_KEYS": f"{KEY_A}=a"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, page = time.monotonic() + 60, None
        while page is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                page = requests.get(f"{base}/ui", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.2)
        assert page is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        script = requests.get(f"{base}/ui/static/app.js", timeout=10)
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert script.text.startswith("// Spool dashboard")
        data = requests.get(f"{base}/ui/api/overview", headers={"X-API-Key": KEY_A}, timeout=10)
        assert data.status_code == 200 and data.json()["queues"] == []
    finally:
        stop(proc, 10)


@pytest.mark.parametrize(
    "body",
    [
        {"all": True, "max": None},
        {"all": True, "queue": None},
        {"all": True, "type": None},
        {"ids": None},
        {"all": None},
    ],
)
def test_dead_actions_refuse_null_fields(api: Api, body: dict[str, object]) -> None:
    """Found by schemathesis: `"max": null` was taken as "no cap" on purge-all."""
    for verb in ("redrive", "purge"):
        reply = api.post(f"/ui/api/dead/{verb}", body)
        assert reply.status == 422, (verb, body, reply.body)
        assert b"null" in reply.body


def test_dashboard_reads_and_redrives_jobs_a_few_at_a_time(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: a list of 200 rows read 200 whole jobs at once, and an "all" action read
    dead jobs 500 at a time and redrove up to 5000 in one call that handed every one
    back whole. Each job may carry a 256 KiB payload, so one request of one tenant
    held a few hundred MB for answers of ids and short rows (`spool serve`'s RSS went
    from 320 to 750 MB redriving 600 such jobs). Now no store call hands back more
    than READ_STEP jobs, and the answers are the same."""
    from chalicelib.api import ui_routes

    step = ui_routes.READ_STEP
    made = step * 2 + 7
    for start in range(0, made, 50):
        reply = api.post("/enqueue", {"jobs": [DEAD_JOB] * min(50, made - start)})
        assert reply.status == 201, reply.body
    run_due(rt)
    handed = count_handed(monkeypatch, rt.store)
    rows = api.get("/ui/api/jobs?state=dead&limit=200").json
    assert len(rows["jobs"]) == made and rows["next_cursor"] is None
    first = api.get(f"/ui/api/jobs?state=dead&limit={step + 3}").json
    assert len(first["jobs"]) == step + 3 and first["next_cursor"] is not None
    rest = api.get(f"/ui/api/jobs?state=dead&limit=200&cursor={first['next_cursor']}").json
    assert [j["id"] for j in first["jobs"] + rest["jobs"]] == [j["id"] for j in rows["jobs"]]
    reply = api.post("/ui/api/dead/redrive", {"all": True})
    assert reply.json["done"] == made and not reply.json["more"]
    assert sorted(reply.json["ids"]) == sorted(j["id"] for j in rows["jobs"])
    assert max(handed) <= step, handed
