"""The worker's scrape port (local/metrics_http.py) against a DNS-rebinding web page.

The port has no key: on 127.0.0.1 (the default) only this machine can connect. A web
page the developer opens can, though: evil.example's name, answered first with the
attacker's address and then with 127.0.0.1, makes the browser send the page's
`fetch("/metrics")` to the worker's port as same-origin, and hand the answer (every
tenant's queue names and job types, the workers' host:pid) back to the page. Such a
request names the attacker's site in its Host header, where a local scraper names an
address or localhost. Before, every Host was served (200 with the exposition).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chalicelib.local_hosts import local_host_only, serves_host
from local.metrics_http import MetricsServer
from tests.apikit import API_KEYS
from tests.procs import guarded_env, spool_serve, stop
from tests.test_chalice_local import ROOT, chalice_command, free_port

GUARD = 10.0  # seconds a read may wait before the test fails
EXPOSITION = b'# HELP spool_x x\n# TYPE spool_x gauge\nspool_x{queue="secret-queue"} 1\n'


@pytest.fixture(scope="module")
def loopback() -> Iterator[MetricsServer]:
    served = MetricsServer("127.0.0.1", 0, lambda: EXPOSITION, "text/plain")
    served.start()
    try:
        yield served
    finally:
        served.stop()


def ask(server: MetricsServer, host: str | None, method: str = "GET") -> tuple[int, bytes]:
    """One request with exactly this Host line (None: none, as HTTP/1.0 may send)."""
    address, port = server.server_address[:2]
    head = f"{method} /metrics HTTP/1.0\r\n"
    if host is not None:
        head += f"Host: {host}\r\n"
    with socket.create_connection((str(address), int(port)), timeout=GUARD) as sock:
        sock.sendall((head + "\r\n").encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example",
        "rebind.attacker.example:9100",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "xn--80ak6aa92e.com",
        "192.168.1.1.nip.io:9100",
    ],
)
def test_a_page_of_another_site_reads_no_metrics(loopback: MetricsServer, host: str) -> None:
    for method in ("GET", "HEAD"):
        status, body = ask(loopback, host, method)
        assert status == 403, (host, method, status)
        assert b"secret-queue" not in body


@pytest.mark.parametrize(
    "host",
    [
        None,
        "127.0.0.1",
        "127.0.0.1:9100",
        "127.1.2.3:9100",
        "localhost",
        "LOCALHOST:9100",
        "localhost.",
        "spool.localhost:9100",
        "[::1]:9100",
        "[::1]",
    ],
)
def test_a_local_scraper_is_served_whatever_local_name_it_uses(
    loopback: MetricsServer, host: str | None
) -> None:
    status, body = ask(loopback, host)
    assert (status, body) == (200, EXPOSITION)


@pytest.mark.parametrize("bound", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_port_bound_beyond_loopback_serves_any_host(bound: str) -> None:
    """On --metrics-host 0.0.0.0 (the containers) a scraper may name the pod by any DNS
    name (a Service, a headless record): the network policy is the fence there. (Tests
    bind loopback only, so the rule is asked directly.)"""
    assert local_host_only(bound) is False
    assert local_host_only("127.0.0.1") is True
    assert local_host_only("::1") is True
    assert local_host_only("localhost") is True
    assert serves_host("spool-worker.spool.svc.cluster.local:9100", local_only=False)
    assert not serves_host("spool-worker.spool.svc.cluster.local:9100", local_only=True)


# -- `spool serve` with SPOOL_METRICS_PUBLIC: its /metrics takes no key either ----------


@pytest.fixture(scope="module")
def public_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder = tmp_path_factory.mktemp("public-metrics")
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_METRICS_PUBLIC="true",
    )
    child = spool_serve("--port", "0", "--no-worker", env=env)
    try:
        address = urlsplit(child.url)
        yield str(address.hostname), int(address.port or 80)
    finally:
        stop(child.proc)


def ask_serve(where: tuple[str, int], path: str, host: str, method: str = "GET") -> int:
    with socket.create_connection(where, timeout=GUARD) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/metrics", "//metrics", "/metrics/", "/%6detrics"])
def test_public_metrics_of_spool_serve_are_no_other_sites(
    public_serve: tuple[str, int], path: str
) -> None:
    """Before: 200 with every tenant's queue names, to a page of rebind.attacker.example."""
    for method in ("GET", "HEAD"):
        assert ask_serve(public_serve, path, "rebind.attacker.example:8000", method) == 403
    assert ask_serve(public_serve, path, f"127.0.0.1:{public_serve[1]}") == 200
    assert ask_serve(public_serve, path, "localhost") == 200


def test_keyed_routes_of_spool_serve_answer_any_host(public_serve: tuple[str, int]) -> None:
    """A route that takes a key needs no Host check (the page has no key): an API
    client behind a name of its own (an /etc/hosts alias, a tunnel) keeps working."""
    assert ask_serve(public_serve, "/health", "spool.internal.example") == 200
    assert ask_serve(public_serve, "/ui", "spool.internal.example") == 200


def test_each_server_process_of_processes_n_keeps_the_rule(tmp_path: Path) -> None:
    """`--processes 2`: the server processes get a socket, not --host; each reads where
    it listens from the socket (a 0.0.0.0 parent's children took the default 127.0.0.1
    for theirs, and would have refused the names a private network scrapes by)."""
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_METRICS_PUBLIC="true",
    )
    child = spool_serve("--port", "0", "--no-worker", "--processes", "2", env=env)
    try:
        address = urlsplit(child.url)
        where = (str(address.hostname), int(address.port or 80))
        answers = {ask_serve(where, "/metrics", "rebind.attacker.example") for _ in range(6)}
        assert answers == {403}
        assert ask_serve(where, "/metrics", "localhost") == 200
    finally:
        stop(child.proc)


# -- `chalice local` with SPOOL_METRICS_PUBLIC: the same rule ----------------------------


@pytest.fixture(scope="module")
def public_chalice_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`chalice local` whose stage says SPOOL_METRICS_PUBLIC=true: .chalice/config.json
    sets it false for every stage, over the shell's value (README), so an operator who
    wants it public edits the file, as this copy of it is edited."""
    folder = tmp_path_factory.mktemp("public-metrics-chalice-local")
    for name in ("app.py", "chalicelib"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["environment_variables"]["SPOOL_METRICS_PUBLIC"] = "true"
    (folder / ".chalice").mkdir()
    (folder / ".chalice" / "config.json").write_text(json.dumps(config))
    port = free_port()
    env = {**os.environ, "SPOOL_API_KEYS": API_KEYS}
    argv = [*chalice_command(), "local", "--stage", "local", "--no-autoreload", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ask_serve(("127.0.0.1", port), "/health", "127.0.0.1")
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("chalice local did not answer /health")
        yield "127.0.0.1", port
    finally:
        stop(proc)


@pytest.mark.parametrize("path", ["/metrics", "/metrics?x=1", "/%6detrics"])
def test_public_metrics_of_chalice_local_are_no_other_sites(
    public_chalice_local: tuple[str, int], path: str
) -> None:
    """Before: 200 with the exposition to Host rebind.attacker.example."""
    assert ask_serve(public_chalice_local, path, "rebind.attacker.example") == 403
    assert ask_serve(public_chalice_local, path, "localhost:8000") == 200
    assert ask_serve(public_chalice_local, "/health", "rebind.attacker.example") == 200
