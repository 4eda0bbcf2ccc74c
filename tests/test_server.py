"""The same app.py served over a real socket (waitress + the emulated worker)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import app as spool_app
from chalicelib.runtime import Runtime
from local.cli_errors import EXIT_INTERRUPTED
from local.emulator import Emulator, context
from local.quick_routes import quick_requests
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, TENANT_A, TENANT_B, installed, settings_for
from tests.procs import spool_serve, stop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, max_body_bytes=4096, demo_handlers=True)) as runtime:
        yield runtime


@pytest.fixture(params=["inline", "threads"])
def base(rt: Runtime, request: pytest.FixtureRequest) -> Iterator[str]:
    # `spool serve` on SQLite answers its quick routes on the loop thread; on a
    # network store every request goes to the pool: both must answer alike.
    quick = quick_requests(rt.settings.store_url) if request.param == "inline" else None
    assert (quick is None) is (request.param == "threads")
    server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=8, quick=quick)
    server.start()
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    try:
        yield server.url
    finally:
        server.stop()
        emulator.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["X-API-Key"] = KEY_A
        yield s


def test_enqueue_then_long_poll_status_over_the_socket(
    base: str, session: requests.Session
) -> None:
    created = session.post(
        f"{base}/enqueue", json={"type": "echo", "payload": {"hi": 1}}, timeout=10
    )
    assert created.status_code == 201
    url = base + created.json()["status_url"]
    done = session.get(url, params={"wait": 10}, timeout=15)
    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    assert done.json()["result"] == {"hi": 1}
    assert done.headers["X-Cache"] == "miss"
    assert session.get(url, timeout=10).headers["X-Cache"] == "hit"


def test_health_and_unknown_routes(base: str) -> None:
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok", "store": "ok"}
    missing = requests.get(f"{base}/no/such/route", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/met%09rics"),
        ("GET", "/jo%09bs?limit=1"),
        ("POST", "/ui/api/dead/pu%0Arge"),
        ("POST", "/en%0Dqueue"),
        ("GET", "/status/j_0123%0D%0A4567"),
        ("GET", "/jobs%00"),
        ("GET", "/health%7F"),
    ],
)
def test_a_path_holding_a_control_character_reaches_no_route(
    base: str, session: requests.Session, method: str, path: str
) -> None:
    """Was: urlparse dropped tabs and line breaks, so `/met%09rics` answered as /metrics
    past a proxy rule that denies /metrics, and `/ui/api/dead/pu%0Arge` purged."""
    session.post(f"{base}/enqueue", json={"type": "echo", "payload": {}}, timeout=10)
    answer = session.request(method, base + path, json={"all": True}, timeout=10)
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["code"] == "not_found" and "control character" in error["message"]
    assert "\n" not in answer.text and "\t" not in answer.text  # shown escaped
    assert session.get(f"{base}/jobs", timeout=10).json()["jobs"]  # nothing was purged


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/metrics;x"),
        ("GET", "/health;"),
        ("GET", "/jobs;a=b?limit=1"),
        ("GET", "/openapi.json%3Bx"),
        ("POST", "/ui/api/dead/purge;x"),
        ("POST", "/enqueue;v=1"),
    ],
)
def test_a_path_with_a_semicolon_reaches_no_route(
    base: str, session: requests.Session, method: str, path: str
) -> None:
    """Was: urlparse reads `;...` at the end of a path as parameters and drops them, so
    `/metrics;x` answered as /metrics past a proxy rule that denies /metrics, and
    `/ui/api/dead/purge;x` purged; API Gateway matches `;` as part of the path."""
    session.post(f"{base}/enqueue", json={"type": "echo", "payload": {}}, timeout=10)
    answer = session.request(method, base + path, json={"all": True}, timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"
    assert session.get(f"{base}/jobs", timeout=10).json()["jobs"]  # nothing was purged


def test_a_job_id_with_a_semicolon_is_not_cut_at_it(base: str, session: requests.Session) -> None:
    """Was: `/status/ID;anything` answered job ID, and cancelled it on /jobs/ID;x/cancel."""
    job_id = session.post(f"{base}/enqueue", json={"type": "echo", "delay": 60}, timeout=10).json()[
        "id"
    ]
    for suffix in (";x", "%3Bx", ";"):
        assert session.get(f"{base}/status/{job_id}{suffix}", timeout=10).status_code == 404
    assert session.post(f"{base}/jobs/{job_id};x/cancel", timeout=10).status_code == 404
    assert session.get(f"{base}/status/{job_id}", timeout=10).json()["state"] == "queued"


def _as_on_lambda(method: str, resource: str, job_id: str) -> tuple[int, Any]:
    """app.py's answer to the event API Gateway sends for `resource` with this id:
    its path parameters decoded, the resource matched on the path as sent."""
    headers = {"x-api-key": KEY_A}
    event = {
        "resource": resource,
        "path": resource.replace("{id}", "x"),
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "multiValueQueryStringParameters": None,
        "pathParameters": {"id": job_id},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": resource.replace("{id}", "x"),
            "stage": "api",
        },
        "body": None,
        "isBase64Encoded": False,
    }
    response = spool_app.app(event, context("api_handler"))
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(
    ("sent", "job_id"),
    [
        ("abc%2Fdef", "abc/def"),
        ("abc%2F", "abc/"),
        ("abc%3Bdef", "abc;def"),
        ("abc%3Fdef", "abc?def"),
        ("abc%23def", "abc#def"),
        ("abc%253Bdef", "abc%3Bdef"),
        ("abc%25", "abc%"),
        ("%C3%A9", "\u00e9"),
    ],
    ids=[
        "slash",
        "slash-last",
        "semicolon",
        "question",
        "hash",
        "escaped-escape",
        "percent",
        "utf8",
    ],
)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/status/{id}"),
        ("POST", "/jobs/{id}/cancel"),
        ("POST", "/dlq/{id}/redrive"),
        ("GET", "/ui/api/jobs/{id}"),
    ],
)
def test_a_path_parameter_reaches_the_app_decoded_as_on_lambda(
    base: str, session: requests.Session, method: str, template: str, sent: str, job_id: str
) -> None:
    """Was: `/status/abc%2Fdef` answered "no route" (PATH_INFO is decoded, so the id
    became two segments), and `abc%3Bdef` reached the app as `abc%3Bdef`. API Gateway
    matches the path as sent and passes the id decoded: the answers must be the same."""
    answer = session.request(method, base + template.replace("{id}", sent), timeout=10)
    status, body = _as_on_lambda(method, template, job_id)
    assert (answer.status_code, answer.json()) == (status, body)
    assert status == 404 and body["error"]["code"] == "not_found"
    if template != "/ui/api/jobs/{id}":
        assert body["error"]["details"] == {"id": job_id}


def test_api_answers_are_not_stored_by_caches_nor_sniffed(
    base: str, session: requests.Session
) -> None:
    """Was: only /ui answers and /metrics carried these; /status holds payloads."""
    created = session.post(f"{base}/enqueue", json={"type": "echo", "payload": {}}, timeout=10)
    answers = [
        created,
        session.get(base + created.json()["status_url"], timeout=10),
        session.get(f"{base}/jobs", timeout=10),
        session.get(f"{base}/status/j_{'0' * 32}", timeout=10),  # an error answer
        requests.get(f"{base}/jobs", timeout=10),  # no key
        session.get(f"{base}/no/such/route", timeout=10),
        session.get(f"{base}/jo%09bs", timeout=10),
    ]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.url
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.url


def test_errors_over_the_socket(base: str, session: requests.Session, rt: Runtime) -> None:
    post = session.post
    assert post(f"{base}/enqueue", data=b"{nope", timeout=10).status_code == 400
    assert post(f"{base}/enqueue", json={"type": "zzz"}, timeout=10).status_code == 422
    assert (
        post(f"{base}/enqueue", json={"type": "echo", "state": "succeeded"}, timeout=10).status_code
        == 422
    )
    big = post(f"{base}/enqueue", json={"type": "echo", "payload": {"x": "y" * 5000}}, timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    no_key = requests.post(f"{base}/enqueue", json={"type": "echo"}, timeout=10)
    assert no_key.status_code == 401 and "WWW-Authenticate" in no_key.headers
    wrong = session.delete(f"{base}/jobs", timeout=10)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert session.get(f"{base}/jobs", params={"limit": 0}, timeout=10).status_code == 422
    assert rt.store.counters() == {}  # nothing above was stored


@pytest.mark.parametrize("path", ["/enqueue", "/metrics", "/status/j_0", "/ui/api/dead/purge"])
def test_options_is_not_a_cors_preflight_answered_to_anyone(base: str, path: str) -> None:
    """No CORS is enabled: OPTIONS is a method no route has (405 in Spool's shape),
    not chalice local's 200 preflight that skipped the key, the log and the headers."""
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    reply = requests.options(f"{base}{path}", headers=preflight, timeout=10)
    assert reply.status_code == 405, reply.text
    assert reply.json()["error"]["code"] == "method_not_allowed"
    assert not any(name.lower().startswith("access-control-") for name in reply.headers)
    if path.startswith("/ui"):  # the dashboard's headers, on its errors too
        assert (
            reply.headers["X-Frame-Options"] == "DENY"
            and "Content-Security-Policy" in reply.headers
        )


def test_a_dashboard_path_no_route_matches_carries_its_headers(base: str) -> None:
    reply = requests.get(f"{base}/ui/api/no-such-thing", timeout=10)
    assert reply.status_code == 404
    assert (
        reply.headers["X-Frame-Options"] == "DENY" and reply.headers["Cache-Control"] == "no-store"
    )


def test_tenants_are_isolated_over_the_socket(base: str, session: requests.Session) -> None:
    job_id = session.post(f"{base}/enqueue", json={"type": "echo", "delay": 60}, timeout=10).json()[
        "id"
    ]
    other = {"X-API-Key": KEY_B}
    theirs = requests.get(f"{base}/status/{job_id}", headers=other, timeout=10)
    unknown = requests.get(f"{base}/status/j_{'0' * 32}", headers=other, timeout=10)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert (
        requests.post(f"{base}/jobs/{job_id}/cancel", headers=other, timeout=10).status_code == 404
    )
    assert session.post(f"{base}/jobs/{job_id}/cancel", timeout=10).json()["state"] == "cancelled"


def test_keep_alive_reuses_one_connection(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        for _ in range(5):
            conn.request("POST", "/enqueue", body='{"type": "echo"}', headers={"X-API-Key": KEY_A})
            reply = conn.getresponse()
            assert reply.status == 201
            reply.read()
        assert conn.sock is sock and reply.getheader("Connection") != "close"
    finally:
        conn.close()


def _raw_exchange(base: str, request: bytes, settle: float = 0.5) -> bytes:
    """Send raw bytes on one connection and read everything that comes back."""
    import socket
    import time

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(settle)
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    return received


@pytest.mark.parametrize(
    ("path", "status"),
    [("/health", 200), ("/status/j_0", 401), ("/enqueue", 405), ("/nowhere", 404)],
)
def test_head_answers_like_get_without_a_body(base: str, path: str, status: int) -> None:
    get = requests.get(f"{base}{path}", timeout=10)
    head = requests.head(f"{base}{path}", timeout=10)
    assert head.status_code == get.status_code == status
    assert head.content == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"]


def test_head_then_get_on_one_connection_reads_two_clean_responses(base: str) -> None:
    # Any body after a HEAD's headers would be read as the start of the next response.
    received = _raw_exchange(
        base,
        b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /enqueue HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    heads = received.split(b"\r\n\r\n")
    assert heads[0].startswith(b"HTTP/1.1 200 ")
    assert heads[1].startswith(b"HTTP/1.1 405 ")
    assert heads[2].startswith(b"HTTP/1.1 200 ")
    body = json.loads(heads[3])
    assert body["status"] == "ok"


def test_an_empty_answer_claims_no_content_type(base: str) -> None:
    reply = requests.get(f"{base}/ui/", allow_redirects=False, timeout=10)
    assert reply.status_code == 308 and reply.content == b""
    assert "Content-Type" not in reply.headers


def test_concurrent_requests_never_see_each_others_request(base: str, rt: Runtime) -> None:
    """Chalice keeps the current request on the app; the server makes it per-thread."""
    results: list[tuple[str, str]] = []
    failures: list[Any] = []

    def client(key: str, tenant: str) -> None:
        with requests.Session() as s:
            for n in range(20):
                r = s.post(
                    f"{base}/enqueue",
                    json={"type": "echo", "payload": {"who": tenant, "n": n}},
                    headers={"X-API-Key": key},
                    timeout=20,
                )
                if r.status_code != 201:
                    failures.append(r.text)
                else:
                    results.append((tenant, r.json()["id"]))

    threads = [
        threading.Thread(target=client, args=pair)
        for pair in [(KEY_A, TENANT_A), (KEY_B, TENANT_B)] * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and len(results) == 160
    for tenant, job_id in results:
        job = rt.store.get(job_id)
        assert job is not None and job.tenant == tenant and job.payload["who"] == tenant


def test_spool_serve_prints_a_working_curl_line_and_stops_on_ctrl_c(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_API_KEYS"}
    env["SPOOL_STORE_URL"] = f"sqlite:///{tmp_path}/serve.db"
    served = spool_serve("--threads", "4", env=env)
    proc = served.proc
    try:
        banner = served.banner
        key = re.search(r"made for this run: (\S+)", banner)
        assert key, banner
        lines = banner.splitlines()
        curl = next(line.strip() for line in lines if line.strip().startswith("curl -s -X POST"))
        out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        created = json.loads(out.stdout)
        assert created["created"] is True
        done = requests.get(
            served.url + created["status_url"],
            params={"wait": 10},
            headers={"X-API-Key": key.group(1)},
            timeout=20,
        )
        assert done.json()["state"] == "succeeded"  # the emulated worker ran it
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_spool_serve_reports_a_busy_port_without_a_traceback() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SPOOL_STORE_URL": "memory://"}
        out = subprocess.run(
            [sys.executable, "-m", "local.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_spool_serve_refuses_malformed_keys_at_start() -> None:
    env = {**os.environ, "SPOOL_STORE_URL": "memory://", "SPOOL_API_KEYS": "no-tenant-here"}
    out = subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "SPOOL_API_KEYS" in out.stderr


def _post_with_keys(base: str, keys: list[str]) -> tuple[int, dict[str, Any]]:
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps({"type": "echo"})
        conn.putrequest("POST", "/enqueue")
        for key in keys:
            conn.putheader("X-API-Key", key)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body.encode())
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_a_repeated_api_key_header_is_answered_as_on_lambda(base: str, rt: Runtime) -> None:
    """waitress joins repeated headers with commas: "k, k" was an unknown key (401, and
    a failed sign-in counted against the client), where API Gateway's event takes the
    same key twice as once and refuses two different keys with 400."""
    status, _ = _post_with_keys(base, [KEY_A, KEY_A])
    assert status == 201
    status, answer = _post_with_keys(base, [KEY_A, KEY_B])
    assert status == 400, answer
    assert answer["error"]["details"] == {"header": "x-api-key"}
    assert sum(rt.store.counts().values()) == 1


def test_a_long_poll_running_when_spool_serve_stops_gets_its_answer(tmp_path: Path) -> None:
    """SIGTERM closed a running `?wait=20` with no answer at all (curl: empty reply):
    the loop that sends answers had stopped before the request's thread was done."""
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_API_KEYS"}
    env.update(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db", SPOOL_API_KEYS="k-0123456789abcdef=t"
    )
    served = spool_serve("--no-worker", env=env)
    proc = served.proc
    try:
        headers = {"X-API-Key": "k-0123456789abcdef"}
        made = requests.post(
            served.url + "/enqueue", json={"type": "echo"}, headers=headers, timeout=10
        )
        job_id = made.json()["id"]
        answers: list[requests.Response | BaseException] = []

        def long_poll() -> None:
            try:
                answers.append(
                    requests.get(
                        f"{served.url}/status/{job_id}",
                        params={"wait": 20},
                        headers=headers,
                        timeout=30,
                    )
                )
            except BaseException as exc:
                answers.append(exc)

        poller = threading.Thread(target=long_poll)
        poller.start()
        threading.Event().wait(1.0)  # the poll is waiting (nothing runs the job)
        proc.send_signal(signal.SIGTERM)
        poller.join(15)
        assert proc.wait(timeout=30) == 0
        [answer] = answers
        assert isinstance(answer, requests.Response), answer
        assert answer.status_code == 200 and answer.json()["state"] == "queued"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_request_finishing_while_the_server_stops_is_answered_without_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Closing waitress's server object to stop accepting also closed its trigger, which
    a request finishing during the stop pulls: EBADF, logged with a traceback."""
    started, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        started.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = Server(slow, "127.0.0.1", 0, threads=2)
    server.start()
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(requests.get(server.url, timeout=20).status_code)
    )
    with caplog.at_level(logging.ERROR):
        client.start()
        assert started.wait(10)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        threading.Event().wait(0.3)  # the listener is closed, the request still runs
        release.set()
        client.join(20)
        stopper.join(20)
    assert answers == [200]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_a_long_poll_whose_client_hung_up_frees_its_wait_slot(tmp_path: Path) -> None:
    """Four `?wait=20` whose clients closed the connection held all four of the tenant's
    wait slots for the full 20 s: the next `?wait` was a 429 until they ran out."""
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_API_KEYS"}
    env.update(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db", SPOOL_API_KEYS="k-0123456789abcdef=t"
    )
    served = spool_serve("--no-worker", env=env)
    try:
        headers = {"X-API-Key": "k-0123456789abcdef"}
        made = requests.post(
            served.url + "/enqueue", json={"type": "echo"}, headers=headers, timeout=10
        )
        job_id = made.json()["id"]
        port = int(served.url.rsplit(":", 1)[1])
        for _ in range(4):  # the tenant's cap (SPOOL_MAX_WAITS_PER_TENANT's default)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(
                    f"GET /status/{job_id}?wait=20 HTTP/1.1\r\nHost: x\r\n"
                    "X-API-Key: k-0123456789abcdef\r\n\r\n".encode()
                )
                threading.Event().wait(0.2)  # its wait has begun; then the client leaves
        threading.Event().wait(2.0)  # each wait looks again every 0.25 s at most
        answer = requests.get(
            f"{served.url}/status/{job_id}", params={"wait": 1}, headers=headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "queued"
    finally:
        stop(served.proc)


def test_ctrl_c_stops_spool_serve_while_a_request_waits_inside_sqlite(tmp_path: Path) -> None:
    # Another program holds SQLite's writer, so an enqueue (answered on the loop
    # thread) waits in SQLite's C busy handler for up to 10 s. Signals must still be
    # handled at once: the loop runs beside the main thread, which only waits.
    db = tmp_path / "serve.db"
    env = {**os.environ, "SPOOL_STORE_URL": f"sqlite:///{db}", "SPOOL_API_KEYS": f"{KEY_A}=a"}
    served = spool_serve("--no-worker", env=env)
    proc = served.proc
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        stuck: list[object] = []

        def post() -> None:
            try:
                stuck.append(
                    requests.post(
                        served.url + "/enqueue",
                        json={"type": "echo", "payload": {}},
                        headers={"X-API-Key": KEY_A},
                        timeout=60,
                    ).status_code
                )
            except requests.RequestException as exc:  # the server stopped meanwhile
                stuck.append(exc)

        enqueue = threading.Thread(target=post, daemon=True)
        enqueue.start()
        enqueue.join(0.5)
        assert not stuck  # waiting for the writer
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        err = proc.stderr
        said = threading.Thread(
            target=lambda: next(line for line in err if "stopping" in line), daemon=True
        )
        said.start()
        said.join(6)  # the busy handler waits 10 s
        assert not said.is_alive(), "the first Ctrl-C was not handled"
        proc.send_signal(signal.SIGINT)  # the second stops at once
        assert proc.wait(timeout=6) == EXIT_INTERRUPTED
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
