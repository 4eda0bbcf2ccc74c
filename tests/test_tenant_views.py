"""What one tenant can learn of another's work (and of the operator's) over real HTTP.

A real `spool serve` (SQLite, the emulated worker) with two tenants, the system
tenant that periodic jobs run as, and an operator key. Tenant B and the operator's
schedule leave distinctive strings behind (queue names, types, keys, ids); every
read route answers tenant A without any of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.api import routes
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY
from tests.procs import guarded_env, spool_serve_logged, stop

SYSTEM_KEY = "key-sys-5432109876"
SCHEDULE = "ledger-close-secret"
SCHEDULE_QUEUE = "ops-internal-q"
SCHEDULES = (
    f'[{{"name": "{SCHEDULE}", "type": "echo", "every": 3600, "queue": "{SCHEDULE_QUEUE}",'
    ' "payload": {"r": 1}}]'
)
B_QUEUE = "b-private-queue"
B_KEY = "b-idempotency-secret"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("tenant-views")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=f"{KEY_A}=tenant-a,{KEY_B}=tenant-b,{SYSTEM_KEY}=_system",
        SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=operator",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_SCHEDULES=SCHEDULES,
    )
    child = spool_serve_logged(folder / "serve.log", "--threads", "4", env=env)
    try:
        url = child.url
        mine = _call(url, "POST", "/enqueue", KEY_A, json={"type": "echo", "queue": "a-queue"})
        assert mine.status_code == 201, mine.text
        job = {"type": "fail", "queue": B_QUEUE, "payload": {"always": True}, "max_attempts": 1}
        theirs = _call(url, "POST", "/enqueue", KEY_B, json={**job, "idempotency_key": B_KEY})
        assert theirs.status_code == 201, theirs.text
        b_id = theirs.json()["id"]
        deadline = time.monotonic() + 30
        while _call(url, "GET", f"/status/{b_id}", KEY_B).json()["state"] != "dead":
            assert time.monotonic() < deadline, "tenant B's job never died"
            time.sleep(0.05)
        # The emulated worker fires the schedule's current tick under the system tenant.
        while not _system_runs(url):
            assert time.monotonic() < deadline, "the schedule never fired"
            time.sleep(0.05)
        yield {"url": url, "a": mine.json()["id"], "b": b_id}
    finally:
        stop(child.proc)


def _system_runs(url: str) -> bool:
    view = _call(url, "GET", "/ui/api/schedules", SYSTEM_KEY).json()
    return any(run["job"] for row in view["schedules"] for run in row["last_runs"])


def _call(url: str, method: str, path: str, key: str | None, **kw: Any) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.request(method, url + path, headers=headers, timeout=30, **kw)


def _secrets(served: dict[str, Any]) -> list[str]:
    return [SCHEDULE, SCHEDULE_QUEUE, B_QUEUE, B_KEY, served["b"], "tenant-b"]


def test_a_tenant_sees_no_schedule_of_the_operator(served: dict[str, Any]) -> None:
    """Before: /ui/api/schedules listed the system tenant's schedules (name, type, queue,
    cadence) to every tenant's key."""
    for key in (KEY_A, KEY_B):
        reply = _call(served["url"], "GET", "/ui/api/schedules", key)
        assert reply.status_code == 200, reply.text
        assert reply.json()["schedules"] == [] and reply.json()["jobs_visible"] is False
        assert SCHEDULE not in reply.text and SCHEDULE_QUEUE not in reply.text
    system = _call(served["url"], "GET", "/ui/api/schedules", SYSTEM_KEY).json()
    [row] = system["schedules"]
    assert (row["name"], row["queue"]) == (SCHEDULE, SCHEDULE_QUEUE) and system["jobs_visible"]


def test_an_operator_key_opens_no_dashboard_route(served: dict[str, Any]) -> None:
    reply = _call(served["url"], "GET", "/ui/api/schedules", OPERATOR_KEY)
    assert reply.status_code == 403 and SCHEDULE not in reply.text


READS = [
    "/jobs",
    "/jobs?limit=1000",
    "/dlq",
    "/openapi.json",
    "/ui/api/overview",
    "/ui/api/jobs",
    "/ui/api/jobs?state=dead",
    f"/ui/api/jobs?find={B_KEY}",
    "/ui/api/schedules",
]


@pytest.mark.parametrize("path", READS)
def test_no_read_route_shows_tenant_a_anything_of_b_or_the_operator(
    served: dict[str, Any], path: str
) -> None:
    reply = _call(served["url"], "GET", path, KEY_A)
    assert reply.status_code == 200, reply.text
    leaked = [s for s in _secrets(served) if s in reply.text]
    assert leaked == [], (path, leaked)


def test_every_read_route_is_walked() -> None:
    """A GET route added later that reads jobs must be added to READS (or here)."""
    walked = {p.split("?")[0] for p in READS}
    own = {"/status/{id}", "/ui/api/jobs/{id}", "/health", "/metrics", "/ui", "/ui/static/{name}"}
    gets = {template for method, template in routes.ROUTES.values() if method == "GET"}
    assert gets == walked | own


@pytest.mark.parametrize(
    ("method", "template"),
    [(m, t) for m, t in routes.ROUTES.values() if "{id}" in t],
)
def test_another_tenants_job_id_answers_as_an_unknown_one(
    served: dict[str, Any], method: str, template: str
) -> None:
    """Not "forbidden", not "dead", not its queue: the same 404 body as a made-up id."""
    made_up = "j_" + "0" * 32
    body: dict[str, Any] | None = {} if method == "POST" else None
    theirs = _call(served["url"], method, template.format(id=served["b"]), KEY_A, json=body)
    unknown = _call(served["url"], method, template.format(id=made_up), KEY_A, json=body)
    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.text.replace(served["b"], made_up) == unknown.text
    assert _call(served["url"], "GET", f"/status/{served['b']}", KEY_B).json()["state"] == "dead"


def test_a_bulk_action_by_ids_skips_another_tenants_dead_job(served: dict[str, Any]) -> None:
    for verb in ("redrive", "purge"):
        reply = _call(
            served["url"], "POST", f"/ui/api/dead/{verb}", KEY_A, json={"ids": [served["b"]]}
        )
        assert reply.status_code == 200 and reply.json()["done"] == 0, reply.text
    assert _call(served["url"], "GET", f"/status/{served['b']}", KEY_B).json()["state"] == "dead"


def test_metrics_are_the_operators_only(served: dict[str, Any]) -> None:
    """Queue labels name every tenant's queues: a tenant key gets 403 and no text of them."""
    reply = _call(served["url"], "GET", "/metrics", KEY_A)
    assert reply.status_code == 403 and B_QUEUE not in reply.text
    operator = _call(served["url"], "GET", "/metrics", OPERATOR_KEY)
    assert operator.status_code == 200 and B_QUEUE in operator.text
