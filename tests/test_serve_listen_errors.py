"""`spool serve` that cannot listen says what to change for the reason it cannot.

Every failure to bind was followed by "Pick another --port ... or stop what is using
it", also when the port was free and the address was the mistake (`--host
192.0.2.1`, an address this machine does not have), and a --host that names no
address at all (spaces in it) went to the resolver and came back as waitress's "Invalid
host/port specified.", naming neither.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from local import serve
from tests.procs import guarded_env


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EADDRINUSE, "Pick another --port"),
        (errno.EADDRNOTAVAIL, "--host must be an address of this machine"),
        (errno.EACCES, "ports below 1024"),
    ],
)
def test_the_fix_follows_the_reason(code: int, expected: str) -> None:
    failure = serve.listen_failure("192.0.2.1", 80, OSError(code, "whatever"))
    assert expected in failure.fix and "192.0.2.1:80" in failure.problem


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", *args],
        # A file store: --processes 2 refuses memory://, which one process alone holds.
        cwd=tmp_path, env=guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_address_this_machine_lacks_is_named_as_the_mistake(
    tmp_path: Path, processes: str
) -> None:
    """192.0.2.1 (TEST-NET-1, documentation only) is on no interface here: bind fails
    before any packet could leave."""
    ran = _serve(tmp_path, "--host", "192.0.2.1", "--port", "0", "--processes", processes)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.startswith("spool: cannot listen on 192.0.2.1:0: ")
    assert "--host must be an address of this machine" in ran.stderr
    assert "Pick another --port" not in ran.stderr


def test_a_port_in_use_still_says_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ran = _serve(tmp_path, "--port", port)
    assert ran.returncode == 1 and "Pick another --port" in ran.stderr


def test_a_host_that_is_no_address_is_named(tmp_path: Path) -> None:
    """`a b` cannot be a host name: refused without a look-up leaving the machine."""
    ran = _serve(tmp_path, "--host", "a b", "--port", "0")
    assert ran.returncode == 2, ran.stderr
    assert "argument --host" in ran.stderr and "'a b'" in ran.stderr


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://127.0.0.1", "a URL: give its host alone (--host 127.0.0.1)"),
        ("http://[::1]:8000/", "a URL: give its host alone (--host ::1)"),
        ("127.0.0.1:8000", "give the port as --port"),
        ("1.2.3.4.5", "not an IPv4 address"),
        ("999.0.0.1", "not an IPv4 address"),
    ],
)
def test_a_url_or_a_malformed_address_as_host_is_named_without_a_lookup(
    tmp_path: Path, host: str, expected: str
) -> None:
    """They went to the resolver and came back as waitress's "Invalid host/port
    specified.", naming neither the host nor what was wrong with it."""
    ran = _serve(tmp_path, "--host", host, "--port", "0")
    assert ran.returncode == 2, ran.stderr
    assert f"argument --host: {host!r} is " in ran.stderr and expected in ran.stderr
    assert "Invalid host/port" not in ran.stderr


def test_a_host_name_that_resolves_to_nothing_is_named() -> None:
    """Waitress's own words for a name the resolver does not know named no host: the
    failure names it and says what --host takes."""
    failure = serve.server_failure(
        "nosuch.example", 8000, ValueError("Invalid host/port specified.")
    )
    assert failure.problem == (
        "cannot listen on nosuch.example:8000: the name resolves to no address of this machine"
    )
    assert "--host must be an address of this machine" in failure.fix


def test_other_server_errors_keep_their_words() -> None:
    failure = serve.server_failure("127.0.0.1", 8000, ValueError("SPOOL_HTTP_X is wrong"))
    assert failure.problem == "SPOOL_HTTP_X is wrong" and "SPOOL_HTTP_*" in failure.fix
