"""The http_request handler against real loopback servers, inside a network jail.

The jail swaps the socket layer for the whole test: socket.socket.connect
refuses (and records) any address outside 127.0.0.0/8, and getaddrinfo
answers only from a table the test fills in. So even a broken SSRF guard
could not reach the metadata address or the internet from here; the jail's
own test below proves it bites.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from pydantic import ValidationError

from chalicelib import ssrf
from chalicelib.builtin import http_request as hr
from chalicelib.clock import FakeClock
from chalicelib.errors import Misconfigured, PermanentError, RetryAfter, ValidationFailed
from chalicelib.handlers import JobContext, registry
from chalicelib.ids import new_job_id
from chalicelib.models import Job, JobQuery, JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


# -- the jail ------------------------------------------------------------------
@dataclass
class Jail:
    escapes: list[Any] = field(default_factory=list)  # connects the jail refused
    names: dict[str, list[str]] = field(default_factory=dict)  # fake DNS table
    lookups: list[str] = field(default_factory=list)


@contextlib.contextmanager
def jailed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    """Swap the socket layer; fail the test if anything tried to leave 127.0.0.0/8."""
    state = Jail()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def permitted(sock: socket.socket, address: Any) -> bool:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return True
        if sock.family != socket.AF_INET or not isinstance(address, tuple):
            return False
        try:
            return ipaddress.ip_address(address[0]) in LOOPBACK
        except ValueError:
            return False

    def connect(sock: socket.socket, address: Any) -> None:
        if not permitted(sock, address):
            state.escapes.append(address)
            raise ConnectionRefusedError(f"test jail: no connection to {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not permitted(sock, address):
            state.escapes.append(address)
            return 111
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        state.lookups.append(name)
        answers = state.names.get(name)
        if answers is None:
            try:
                answers = [str(ipaddress.ip_address(name))]  # numeric: no DNS needed
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, f"test jail: no DNS for {name}") from None
        out = []
        for ip in answers:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr = (
                (ip, int(port or 0), 0, 0) if family == socket.AF_INET6 else (ip, int(port or 0))
            )
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield state
    assert not state.escapes, f"a connection outside 127.0.0.0/8 was attempted: {state.escapes}"


@pytest.fixture(autouse=True)
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    with jailed(monkeypatch) as state:
        yield state


def test_the_jail_refuses_non_loopback_and_lets_loopback_through(jail: Jail) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("169.254.169.254", 80), timeout=1)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 80)
    assert jail.escapes == [("169.254.169.254", 80)]
    jail.escapes.clear()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        socket.create_connection(listener.getsockname(), timeout=1).close()
    finally:
        listener.close()


# -- a loopback test server -------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path == "/redirect":
            self._send(int(query.get("code", "302")), b"", {"Location": query["to"]})
        elif parts.path == "/big":
            self._send(200, b"x" * int(query["n"]), {"Content-Type": "text/plain"})
        elif parts.path == "/binary":
            self._send(200, bytes(range(256)), {"Content-Type": "application/octet-stream"})
        elif parts.path == "/status":
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(query["code"]), b"status", extra)
        elif parts.path == "/slow":
            time.sleep(float(query["seconds"]))
            self._send(200, b"late", {})
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }
            self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Secret-Internal", "do-not-copy")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN (a DNS query).
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


@dataclass
class Served:
    port: int
    scheme: str = "http"
    host: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"


@contextlib.contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Served]:
    server = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Served(server.server_address[1], "https" if tls else "http")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def served() -> Iterator[Served]:
    with serving() as server:
        yield server


LOCAL = ssrf.Policy.parse(["127.0.0.1/32"])  # the test server, and nothing else
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def ctx_for(timeout: float = 30.0) -> JobContext:
    job = Job(id=new_job_id(), type="http_request", run_at=NOW, created_at=NOW, updated_at=NOW)
    return JobContext(job, time.monotonic() + timeout)


def run(
    url: str, policy: ssrf.Policy = LOCAL, ca_file: str | None = None, **fields: Any
) -> dict[str, Any]:
    payload = hr.HttpRequestPayload.model_validate({"url": url, **fields})
    return hr.perform(payload, policy, ctx_for(), ca_file)


# -- requests that go through --------------------------------------------------------
def test_get_returns_status_selected_headers_and_body(served: Served) -> None:
    result = run(served.url("/hello?x=1"))
    assert result["status"] == 200
    assert result["url"] == served.url("/hello?x=1")
    assert result["headers"]["content-type"] == "application/json"
    assert "x-secret-internal" not in result["headers"]
    echo = json.loads(result["body"])
    assert echo["method"] == "GET"
    assert echo["path"] == "/hello?x=1"
    assert echo["headers"]["host"] == f"127.0.0.1:{served.port}"
    assert result["body_encoding"] == "text"
    assert result["truncated"] is False


def test_post_json_and_custom_headers(served: Served) -> None:
    result = run(
        served.url("/api"),
        method="post",
        json={"a": [1, 2]},
        headers={"Authorization": "Bearer t", "X-Trace": "42"},
        response_headers=["X-Secret-Internal"],
    )
    echo = json.loads(result["body"])
    assert echo["method"] == "POST"
    assert json.loads(echo["body"]) == {"a": [1, 2]}
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["authorization"] == "Bearer t"
    assert echo["headers"]["x-trace"] == "42"
    assert result["headers"] == {"x-secret-internal": "do-not-copy"}


def test_binary_response_is_base64(served: Served) -> None:
    result = run(
        served.url("/binary"), method="POST", body_base64=base64.b64encode(b"\0\1").decode()
    )
    assert result["body_encoding"] == "base64"
    assert base64.b64decode(result["body"]) == bytes(range(256))


def test_body_is_capped(served: Served) -> None:
    result = run(served.url("/big?n=5000"), max_body_bytes=1000)
    assert result["truncated"] is True
    assert result["body"] == "x" * 1000
    assert result["body_bytes"] == 1000
    assert run(served.url("/big?n=1000"), max_body_bytes=1000)["truncated"] is False


def test_redirects_are_followed_one_hop_at_a_time(served: Served) -> None:
    start = served.url("/redirect?code=307&to=/landed")
    result = run(start, method="PUT", body="payload", headers={"Authorization": "Bearer t"})
    echo = json.loads(result["body"])
    assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/landed", "payload")
    assert echo["headers"]["authorization"] == "Bearer t"  # same origin: kept
    assert result["redirects"] == [start]
    assert result["url"] == served.url("/landed")
    see_other = json.loads(run(served.url("/redirect?code=303&to=/other"), method="POST")["body"])
    assert (see_other["method"], see_other["path"]) == ("GET", "/other")


CALLER_HEADERS = {
    "Authorization": "Bearer t",
    "Cookie": "a=b",
    "X-Api-Key": "k-secret",
    "X-Keep": "1",
    "User-Agent": "caller/1",
    "Content-Type": "application/vnd.caller+json",
}


@pytest.mark.parametrize("code", [302, 307, 308])
def test_every_caller_header_is_dropped_when_a_redirect_changes_origin(code: int) -> None:
    """Custom secrets (X-Api-Key) used to follow a redirect to another origin."""
    with serving() as first, serving() as second:
        result = run(
            first.url(f"/redirect?code={code}&to=" + quote(second.url("/there"))),
            method="POST",
            body="payload",
            headers=CALLER_HEADERS,
        )
    echo = json.loads(result["body"])
    assert echo["path"] == "/there"
    sent = echo["headers"]
    for name in ("authorization", "cookie", "x-api-key", "x-keep"):
        assert name not in sent
    assert sent["user-agent"] == hr.DEFAULT_USER_AGENT
    if code == 302:  # became a GET: no body, nothing describing one
        assert (echo["method"], echo["body"]) == ("GET", "")
        assert "content-type" not in sent
    else:  # the body follows, and so does what says what it is
        assert (echo["method"], echo["body"]) == ("POST", "payload")
        assert sent["content-type"] == "application/vnd.caller+json"


def test_caller_headers_stay_dropped_when_a_later_hop_returns_to_the_first_origin() -> None:
    with serving() as first, serving() as second:
        back = first.url("/home")
        away = second.url("/redirect?to=" + quote(back))
        result = run(first.url("/redirect?to=" + quote(away)), headers=CALLER_HEADERS)
    sent = json.loads(result["body"])["headers"]
    assert "authorization" not in sent and "x-api-key" not in sent


def test_same_origin_redirects_keep_caller_headers(served: Served) -> None:
    result = run(served.url("/redirect?to=/here"), headers=CALLER_HEADERS)
    sent = json.loads(result["body"])["headers"]
    assert sent["x-api-key"] == "k-secret"
    assert sent["authorization"] == "Bearer t"
    assert sent["user-agent"] == "caller/1"


def test_redirect_chains_are_bounded(served: Served) -> None:
    chain = served.url("/redirect?to=" + quote("/redirect?to=/x"))
    with pytest.raises(PermanentError, match="more than 1 redirects"):
        run(chain, max_redirects=1)
    unfollowed = run(chain, follow_redirects=False)
    assert unfollowed["status"] == 302
    assert unfollowed["headers"]["location"] == "/redirect?to=/x"


# -- what the guard stops -------------------------------------------------------------
@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "http://127.0.0.2:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f000001:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://127.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::1]:{port}/",
        "http://allowed.test@127.0.0.1:{port}/",
        "//169.254.169.254/",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_from_a_local_server_to_a_forbidden_target_is_refused(
    served: Served, jail: Jail, location: str
) -> None:
    jail.names["localhost"] = ["127.0.0.1"]
    url = served.url("/redirect?to=" + quote(location.format(port=served.port)))
    with pytest.raises(ssrf.Refused):
        run(url)


def test_if_the_guard_were_broken_the_jail_would_still_stop_the_connection(
    monkeypatch: pytest.MonkeyPatch, jail: Jail
) -> None:
    def no_guard(url: str, policy: ssrf.Policy, resolver: Any) -> Any:
        target = ssrf.parse_url(url)
        return target, [ipaddress.ip_address("169.254.169.254")]

    monkeypatch.setattr(ssrf, "check_url", no_guard)
    with pytest.raises(ConnectionError):
        run("http://169.254.169.254/latest/meta-data/")
    assert jail.escapes == [("169.254.169.254", 80)]
    jail.escapes.clear()


def test_the_checked_address_is_the_one_connected_to(served: Served, jail: Jail) -> None:
    """DNS is asked once per hop; a rebinding answer after the check is never used."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"], ["10.0.0.1"]])
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "svc.test":
            jail.names["svc.test"] = next(answers)
        return real(host, port, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", rebinding)
        policy = ssrf.Policy.parse(["svc.test", "127.0.0.1/32"])
        result = run(f"http://svc.test:{served.port}/pinned", policy)
    echo = json.loads(result["body"])
    assert echo["headers"]["host"] == f"svc.test:{served.port}"
    assert jail.lookups.count("svc.test") == 1


def test_a_name_with_any_forbidden_answer_is_refused(jail: Jail) -> None:
    jail.names["mixed.test"] = ["93.184.216.34", "10.1.2.3"]
    with pytest.raises(ssrf.Refused, match="private"):
        run("http://mixed.test/", ssrf.Policy.parse(["mixed.test"]))


def test_hosts_off_the_allowlist_are_refused(served: Served) -> None:
    with pytest.raises(ssrf.Refused, match="allowlist"):
        run(served.url("/"), ssrf.Policy())
    with pytest.raises(ssrf.Refused, match="allowlist"):
        run("http://other.test/", ssrf.Policy.parse(["allowed.test"]))


def test_allow_private_opens_loopback_for_allowlisted_names_but_not_metadata(
    served: Served, jail: Jail
) -> None:
    jail.names["localhost"] = ["127.0.0.1"]
    jail.names["meta.test"] = ["169.254.169.254"]
    strict = ssrf.Policy.parse(["localhost", "meta.test"])
    relaxed = ssrf.Policy.parse(["localhost", "meta.test"], allow_private=True)
    url = f"http://localhost:{served.port}/private"
    with pytest.raises(ssrf.Refused, match="loopback"):
        run(url, strict)
    assert run(url, relaxed)["status"] == 200
    with pytest.raises(ssrf.Refused, match="metadata"):
        run("http://meta.test/", relaxed)


def test_https_verifies_the_certificate_against_the_name_not_the_address(
    jail: Jail, tmp_path: Path
) -> None:
    import trustme

    ca = trustme.CA()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("secure.test").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    jail.names["secure.test"] = ["127.0.0.1"]
    jail.names["other.test"] = ["127.0.0.1"]
    policy = ssrf.Policy.parse(["secure.test", "other.test"], allow_private=True)
    with serving(server_tls) as server:
        result = run(f"https://secure.test:{server.port}/tls", policy, str(ca_file))
        assert json.loads(result["body"])["headers"]["host"] == f"secure.test:{server.port}"
        with pytest.raises(PermanentError, match="certificate"):
            run(f"https://other.test:{server.port}/tls", policy, str(ca_file))
        with pytest.raises(PermanentError, match="certificate"):
            run(f"https://secure.test:{server.port}/tls", policy)  # system CAs only


# -- retries and failures -----------------------------------------------------------
def test_statuses_to_retry_and_statuses_to_return(served: Served) -> None:
    with pytest.raises(RetryAfter) as waited:
        run(served.url("/status?code=503&retry_after=7"))
    assert waited.value.seconds == 7
    with pytest.raises(hr.RetryableStatus, match="502"):
        run(served.url("/status?code=502"))
    assert run(served.url("/status?code=404"))["status"] == 404
    assert run(served.url("/status?code=500"))["status"] == 500
    with pytest.raises(hr.RetryableStatus):
        run(served.url("/status?code=500"), retry_on_status=[500])


def test_a_slow_server_times_out_and_is_retried(served: Served) -> None:
    with pytest.raises(TimeoutError):
        run(served.url("/slow?seconds=2"), timeout=0.3)


@dataclass
class Drip:
    """A raw HTTP server that sends its answer one line (or byte) at a time."""

    port: int
    sent: int = 0  # header lines or body bytes sent so far
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def dripping(where: str, every: float, count: int) -> Iterator[Drip]:
    listener = socket.create_server(("127.0.0.1", 0))
    drip = Drip(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            try:
                if where == "headers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    for n in range(count):
                        conn.sendall(b"X-Drip-%d: %d\r\n" % (n, n))
                        drip.sent += 1
                        if drip.stop.wait(every):
                            return
                    conn.sendall(b"Content-Length: 0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % count)
                    for _ in range(count):
                        conn.sendall(b"x")
                        drip.sent += 1
                        if drip.stop.wait(every):
                            return
            except OSError:
                return  # the client gave up and closed

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield drip
    finally:
        drip.stop.set()
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_dripping_its_answer_cannot_outlast_the_deadline(where: str) -> None:
    """Each line came within the per-read timeout, so a 1 s request used to wait for
    all 40 (8 s); now every read is cut to what is left of the request's time."""
    every, timeout = 0.2, 1.0
    with dripping(where, every=every, count=40) as drip:
        with pytest.raises(TimeoutError):
            run(f"http://127.0.0.1:{drip.port}/", timeout=timeout)
        sent_when_given_up = drip.sent
    # one item at once, then one per `every`: at most timeout / every + 1 by the deadline
    assert 1 <= sent_when_given_up <= timeout / every + 2
    assert sent_when_given_up < 40


def test_a_closed_port_is_a_retryable_connection_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionError) as failed:
        run(f"http://127.0.0.1:{port}/")
    assert not isinstance(failed.value, PermanentError)


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "http://2130706433/"},
        {"url": "http://user@allowed.test/"},
        {"url": "gopher://allowed.test/"},
        {"url": "http://allowed.test/", "headers": {"Host": "evil.test"}},
        {"url": "http://allowed.test/", "headers": {"Bad Name": "x"}},
        {"url": "http://allowed.test/", "headers": {"X-A": "a\r\nInjected: 1"}},
        {"url": "http://allowed.test/", "body": "a", "json": {"b": 1}},
        {"url": "http://allowed.test/", "body_base64": "not base64!"},
        {"url": "http://allowed.test/", "method": "CONNECT"},
        {"url": "http://allowed.test/", "timeout": 500},
        {"url": "http://allowed.test/", "max_body_bytes": 10**9},
        {"url": "http://allowed.test/", "retry_on_status": [200]},
        {"url": "http://allowed.test/", "surprise": True},
    ],
)
def test_bad_payloads_are_refused_at_enqueue_time(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        hr.HttpRequestPayload.model_validate(fields)


def test_through_the_worker_good_jobs_succeed_and_refused_ones_go_dead(
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    jail: Jail,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "127.0.0.1/32, api.example.com")
    jail.names["api.example.com"] = ["169.254.169.254"]  # allowlisted name, forbidden answer
    store = MemoryStore(clock)
    service = Service(store, registry)
    ok, metadata = service.enqueue(
        [
            EnqueueRequest(type="http_request", payload={"url": served.url("/job")}),
            EnqueueRequest(type="http_request", payload={"url": "http://api.example.com/"}),
        ],
        tenant="t1",
    )
    with pytest.raises(ValidationFailed):
        service.enqueue(
            [EnqueueRequest(type="http_request", payload={"url": "http://0x7f000001/"})], "t1"
        )
    Worker(store, registry, WorkerConfig(concurrency=2)).drain()
    done = store.get(ok.job.id)
    dead = store.get(metadata.job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert isinstance(done.result, dict) and done.result["status"] == 200
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.attempts == 1
    # The tenant is told the name leads nowhere it may go, not where (the job's error
    # is theirs to read); the operator's log says it was the metadata address.
    assert dead.last_error == (
        "Refused: host 'api.example.com' does not resolve to an address this service may reach"
    )
    assert any("metadata" in r.getMessage() and dead.id in r.getMessage() for r in caplog.records)


def _enqueue(url: str) -> tuple[MemoryStore, Any]:
    store = MemoryStore(FakeClock())
    request = EnqueueRequest(type="http_request", payload={"url": url})
    return store, Service(store, registry).enqueue([request], tenant="t1")


@pytest.mark.parametrize(
    ("allowlist", "url", "reason"),
    [
        ("", "https://api.example.com/", "allowlist.*empty"),
        ("api.example.com", "https://other.example.com/", "not on the allowlist"),
        ("*.example.com", "https://example.com/", "not on the allowlist"),
        ("api.example.com", "http://93.184.216.34/", "not on the allowlist"),
        ("0.0.0.0/0, ::/0", "http://10.0.0.1/", "private"),
        ("0.0.0.0/0, ::/0", "http://[::1]/", "loopback"),
        ("169.254.0.0/16", "http://169.254.169.254/", "metadata"),
    ],
)
def test_jobs_that_could_never_be_allowed_are_refused_at_enqueue(
    monkeypatch: pytest.MonkeyPatch, jail: Jail, allowlist: str, url: str, reason: str
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", allowlist)
    with pytest.raises(ValidationFailed, match=reason) as refused:
        _enqueue(url)
    assert refused.value.status == 422
    assert jail.lookups == []


def test_a_malformed_allowlist_is_the_server_s_fault_and_stores_nothing(
    monkeypatch: pytest.MonkeyPatch, jail: Jail
) -> None:
    """The operator's setting, not the job, is wrong: 503 misconfigured naming it (it
    was a 422 telling the client to fix its job), and nothing stored."""
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "10.0.0.0/33")
    store = MemoryStore(FakeClock())
    request = EnqueueRequest(type="http_request", payload={"url": "https://api.example.com/"})
    with pytest.raises(Misconfigured, match="SPOOL_HTTP_ALLOWLIST") as refused:
        Service(store, registry).enqueue([request], tenant="t1")
    assert refused.value.status == 503
    assert store.list_jobs(JobQuery(tenant="t1")).jobs == []
    assert jail.lookups == []


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        ("api.example.com", "https://api.example.com/v1"),
        ("*.example.com", "https://a.b.example.com/"),
        ("0.0.0.0/0", "http://93.184.216.34/"),
        ("10.0.0.0/8", "http://10.1.2.3/"),
    ],
)
def test_jobs_the_guard_may_allow_are_stored_and_names_wait_for_run_time_dns(
    monkeypatch: pytest.MonkeyPatch, jail: Jail, allowlist: str, url: str
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", allowlist)
    store, [added] = _enqueue(url)
    assert store.get(added.job.id) is not None
    assert jail.lookups == []  # no DNS at enqueue: the answer may differ at run time


def test_a_malformed_allowlist_setting_is_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "10.0.0.0/33")
    payload = hr.HttpRequestPayload(url="http://api.example.com/")
    with pytest.raises(PermanentError, match=r"SPOOL_HTTP_ALLOWLIST|CIDR"):
        hr.http_request(payload, ctx_for())


@pytest.mark.parametrize("closing", ["HTTP/1.0", "Connection: close"])
def test_a_body_sent_after_the_headers_of_a_closing_answer_is_read_whole(closing: str) -> None:
    """HTTP/1.0 (or `Connection: close`) answers make http.client close the connection
    before the body is read; the body still arrives later. Reading the bare socket then
    failed with EBADF (intermittently: only when the body was not buffered yet)."""
    listener = socket.create_server(("127.0.0.1", 0))
    head_sent = threading.Event()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            status = "HTTP/1.0 200 OK" if closing == "HTTP/1.0" else "HTTP/1.1 200 OK"
            extra = "" if closing == "HTTP/1.0" else "Connection: close\r\n"
            conn.sendall(f"{status}\r\n{extra}Content-Length: 5\r\n\r\n".encode())
            head_sent.set()
            time.sleep(0.3)  # the body comes after http.client has closed its side
            conn.sendall(b"hello")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        result = run(f"http://127.0.0.1:{port}/late")
    finally:
        thread.join(5)
        listener.close()
    assert head_sent.is_set()
    assert result["status"] == 200 and result["body"] == "hello"


@contextlib.contextmanager
def answering_raw(reply: bytes) -> Iterator[int]:
    """A loopback server that reads a request, writes `reply` and closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(reply)
                conn.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        # close() alone leaves the thread blocked in accept() until join's 5 s ran
        # out (each use cost 5 s); shutdown() wakes it (EINVAL on Linux).
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 200 OK\r\nContent-Le", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nA: b\r\n"],
)
def test_a_response_cut_off_inside_its_headers_is_a_failure_not_a_200(reply: bytes) -> None:
    """http.client takes the end of the stream for the end of the headers: a receiver
    that crashed mid-answer was a 200, and its webhook counted as delivered."""
    with answering_raw(reply) as port, pytest.raises(ConnectionError, match="inside the response"):
        run(f"http://127.0.0.1:{port}/hook")


def test_a_complete_response_from_a_peer_that_then_closes_is_read() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    with answering_raw(reply) as port:
        result = run(f"http://127.0.0.1:{port}/hook")
    assert (result["status"], result["body"]) == (200, "ok")
    headless = b"HTTP/1.1 204 No Content\r\n\r\n"
    with answering_raw(headless) as port:
        assert run(f"http://127.0.0.1:{port}/hook")["status"] == 204
