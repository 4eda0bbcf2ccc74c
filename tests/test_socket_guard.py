"""The suite's network guard bites: nothing a test runs may leave 127.0.0.0/8.

tests/conftest.py installs tests/netguard/spool_netguard.py for the session
and hands it to every child process; its autouse `network_guard` fixture
fails a test whose code (or whose child) was refused, even if the code
swallowed the refusal. Each test here provokes refusals on purpose, checks
them, and takes them off the record so the fixture does not fail it.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netguard import spool_netguard as netguard
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_V4 = ("192.0.2.10", 80)  # TEST-NET-1: never routed, never a real peer
METADATA = ("169.254.169.254", 80)


def taken() -> list[str]:
    return netguard.take()


def test_the_guard_is_on_in_the_test_process_and_for_children() -> None:
    assert netguard.installed()
    assert os.environ[netguard.ENV_ON] == "1"
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == netguard.HERE


def test_tcp_connects_outside_loopback_are_refused_and_recorded() -> None:
    with socket.socket() as s, pytest.raises(ConnectionRefusedError, match="network guard"):
        s.connect(PUBLIC_V4)
    with socket.socket() as s:
        assert s.connect_ex(METADATA) == errno.ECONNREFUSED
    with pytest.raises(OSError):
        socket.create_connection(METADATA, timeout=1)
    found = taken()
    assert len(found) == 3 and all("refused" in line for line in found)
    assert "192.0.2.10" in found[0] and "169.254.169.254" in found[1]


def test_udp_datagrams_outside_loopback_are_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(ConnectionRefusedError):
            s.sendto(b"x", ("192.0.2.53", 53))
        with pytest.raises(ConnectionRefusedError):
            s.sendto(b"x", 0, ("192.0.2.53", 53))
        with pytest.raises(ConnectionRefusedError):
            s.connect(("192.0.2.53", 53))  # a connected UDP socket would send anywhere
    assert len(taken()) == 3


def test_public_names_never_reach_a_resolver() -> None:
    with pytest.raises(socket.gaierror, match="network guard"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(socket.gaierror):
        socket.gethostbyname("dynamodb.us-east-1.amazonaws.com")
    with pytest.raises(socket.gaierror):
        socket.gethostbyname_ex("pypi.org")
    with pytest.raises(socket.herror):
        socket.gethostbyaddr("8.8.8.8")  # a reverse lookup asks DNS too
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 80), timeout=1)
    found = taken()
    assert len(found) == 5
    assert all("resolution" in line for line in found)


def test_ipv6_outside_loopback_is_refused() -> None:
    if not socket.has_ipv6:
        pytest.fail("this interpreter has no IPv6 support to test")
    with socket.socket(socket.AF_INET6) as s:
        with pytest.raises(ConnectionRefusedError):
            s.connect(("2001:db8::1", 80, 0, 0))
        assert s.connect_ex(("::ffff:192.0.2.10", 80, 0, 0)) == errno.ECONNREFUSED
    assert len(taken()) == 2


def test_loopback_localhost_and_wildcard_binds_still_work() -> None:
    with socket.create_server(("0.0.0.0", 0)) as server:  # a 0.0.0.0 bind is allowed
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "127.8.9.10", "localhost"):
            socket.create_connection((host, port), timeout=5).close()
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo("192.0.2.10", 80)  # numeric: no resolver, connect decides
    try:
        server6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        server6 = None  # no ::1 on this host: nothing to connect to
    if server6 is not None:
        with server6:
            socket.create_connection(("::1", server6.getsockname()[1]), timeout=5).close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        unix.bind(str(Path(os.environ.get("TMPDIR", "/tmp")) / f"guard-{os.getpid()}.sock"))
        os.unlink(unix.getsockname())
    assert taken() == []


def test_a_child_process_is_guarded_and_its_attempts_fail_the_test() -> None:
    """A child that swallows the refusal still leaves a record the parent sees."""
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.10', 80), timeout=1)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    # A bare environment, as some tests build: the guard still reaches the child.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    found = taken()
    assert out.stdout.startswith("Blocked ") and "network guard" in out.stdout, out.stderr
    [line] = found
    assert "192.0.2.10" in line and "pid " in line


def test_a_real_aws_store_url_is_stopped_at_the_socket(tmp_path: Path) -> None:
    """The fault that started this: a stage's DynamoDB URL picked up in a test. The
    `spool` child fails at name resolution; nothing reaches AWS."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("spool")), "status", "j_" + "0" * 32],
        cwd=tmp_path,
        env=guarded_env(
            SPOOL_STORE_URL="dynamodb://spool-dev-jobs?queue=spool-dev-jobs",
            AWS_MAX_ATTEMPTS="1",
            AWS_RETRY_MODE="standard",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    found = taken()
    assert found and all("amazonaws.com" in line for line in found), found


def test_the_session_fixture_would_fail_a_test_that_left_a_record() -> None:
    """What `network_guard` checks after each test: a recorded refusal is reported
    once, then the record is clean."""
    with socket.socket() as s:
        assert s.connect_ex(PUBLIC_V4) == errno.ECONNREFUSED
    first = netguard.take()
    assert len(first) == 1 and "192.0.2.10" in first[0]
    assert netguard.take() == []


def test_chalice_test_client_applies_the_local_stage_by_default() -> None:
    from chalice.test import Client

    import app as spool_app

    client = Client(spool_app.app, project_dir=str(ROOT))
    env = client._chalice_config.environment_variables
    assert client._stage_name == "local"
    assert env["SPOOL_STORE_URL"].startswith("sqlite://")
    named = Client(spool_app.app, stage_name="dev", project_dir=str(ROOT))
    assert named._stage_name == "dev"  # a test may still ask for another stage
