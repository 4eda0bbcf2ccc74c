"""Failed sign-ins from many addresses of one IPv6 allocation, and addresses that
carry an IPv4 one (stop 51, helper b).

Each /64 had its own allowance, so a holder of a /48 (an ordinary allocation, 65,536
/64s) guessed 65,536 times as fast as one host. Now each /48 and each /32 also has
an allowance, a fixed multiple of the per-address one (client_groups.WIDER_IPV6), and a
key that has signed in from its /64 is still checked while its /48 is refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chalicelib.api.client_groups import WIDER_IPV6, address_groups
from chalicelib.api.throttle import FailedSignIns
from chalicelib.limits import Rate
from tests.apikit import KEY_A
from tests.served import served


def _gate(count: int = 2) -> FailedSignIns:
    return FailedSignIns(Rate(count, 3600), timer=lambda: 0.0)


def _multiple(prefix: int) -> int:
    return dict(WIDER_IPV6)[prefix]


def test_a_48_spreading_guesses_over_fresh_64s_is_held_to_its_own_allowance() -> None:
    gate = _gate()
    allowed = 2 * _multiple(48)
    refused = []
    for n in range(allowed + 1):
        client = f"2001:db8:7:{n:x}::1"  # a new /64 for every guess
        refused.append(gate.refusing(client, "guess") > 0)
        if not refused[-1]:
            gate.failed(client)
    assert refused == [False] * allowed + [True]
    assert gate.refusing("2001:db8:7:ffff::9", "guess") > 0  # any /64 of that /48
    assert gate.refusing("2001:db8:8::1", "guess") == 0.0  # the next /48 is another site


def test_a_32_spreading_guesses_over_fresh_48s_is_held_to_its_own_allowance() -> None:
    gate = _gate(1)
    allowed = _multiple(32)
    for n in range(allowed):
        client = f"2001:db8:{n:x}::1"  # a new /48 (and /64) for every guess
        assert gate.refusing(client, "guess") == 0.0
        gate.failed(client)
    assert gate.refusing("2001:db8:ffff::1", "guess") > 0
    assert gate.refusing("2001:db9::1", "guess") == 0.0


def test_the_key_owner_in_a_refused_48_still_signs_in() -> None:
    gate = _gate()
    gate.succeeded("2001:db8:7:1::5", "owner-key")
    for n in range(2 * _multiple(48)):
        gate.failed(f"2001:db8:7:{n + 100:x}::1")
    assert gate.refusing("2001:db8:7:1::77", "guess") > 0
    assert gate.refusing("2001:db8:7:1::77", "owner-key") == 0.0  # its own /64: trusted
    assert gate.refusing("2001:db8:7:2::1", "owner-key") > 0  # not from its /64


@pytest.mark.parametrize(
    ("client", "ipv4"),
    [
        ("::ffff:192.0.2.45", "192.0.2.45"),  # IPv4-mapped
        ("::192.0.2.45", "192.0.2.45"),  # IPv4-compatible (deprecated)
        ("2002:c000:022d::1", "192.0.2.45"),  # 6to4: the site's IPv4 address
        ("2002:c000:022d:ffff::2", "192.0.2.45"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo: the client
        ("2001:0:4136:e379:8000:1234:3fff:fdd2", "192.0.2.45"),  # another server, port
        ("64:ff9b::c000:22d", "192.0.2.45"),  # NAT64's well-known prefix
    ],
)
def test_an_address_carrying_an_ipv4_one_is_counted_as_that_ipv4_client(
    client: str, ipv4: str
) -> None:
    assert address_groups(client) == ((ipv4, 1),)
    gate = _gate()
    gate.failed(ipv4)
    gate.failed(client)
    assert gate.refusing(ipv4, "guess") > 0
    assert gate.refusing(client, "guess") > 0


def test_teredo_clients_of_one_server_are_not_one_client() -> None:
    """Teredo addresses put the relay server in their first 64 bits: counted by /64,
    every client of a server (and by /32, every Teredo client) was one."""
    gate = _gate()
    for _ in range(2):
        gate.failed("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert gate.refusing("2001:0:4136:e378:8000:63bf:3fff:fdd2", "guess") > 0
    assert gate.refusing("2001:0:4136:e378:8000:63bf:3fff:fdd3", "guess") == 0.0


@pytest.mark.parametrize(
    ("client", "group"),
    [
        ("fe80::1%eth0", "fe80::/10"),  # the zone is no part of the client
        ("fe80::abcd:1", "fe80::/10"),
        ("febf::1", "fe80::/10"),  # still link-local: one link, one client
        ("::1", "::1"),
        ("10.0.0.1", "10.0.0.1"),
        ("not an address", "not an address"),
    ],
)
def test_link_local_loopback_and_odd_clients_have_one_group(client: str, group: str) -> None:
    assert address_groups(client) == ((group, 1),)


def test_a_global_address_is_counted_by_its_64_48_and_32() -> None:
    assert address_groups("2001:DB8:1:2:3:4:5:6") == (
        ("2001:db8:1:2::/64", 1),
        ("2001:db8:1::/48", _multiple(48)),
        ("2001:db8::/32", _multiple(32)),
    )


def _sign_in(port: int, extra: str, key: str = "wrong-key") -> int:
    request = (
        f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n{extra}Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_spool_serve_counts_the_socket_peer_whatever_forwarded_headers_say(
    tmp_path: Path,
) -> None:
    """Under `spool serve` no header a client sends names the client: neither
    X-Forwarded-For nor the server's own peer header, each new on every guess."""
    with served(tmp_path, extra={"SPOOL_AUTH_FAILURES": "2/h"}) as server:
        statuses = [
            _sign_in(
                server.port,
                f"X-Forwarded-For: 198.51.100.{n}\r\nX-Spool-Peer: 2001:db8:{n}::1\r\n"
                f"X-Real-IP: 203.0.113.{n}\r\nForwarded: for=192.0.2.{n}\r\n",
            )
            for n in range(4)
        ]
        assert statuses == [401, 401, 429, 429]
        # A right key that never signed in from this address is not even checked.
        assert _sign_in(server.port, "", KEY_A) == 429


def test_on_lambda_no_header_a_client_sends_names_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API Gateway's sourceIp is the client there: a forwarded header or the peer
    header `spool serve` writes for itself, sent by the client, changes nothing."""
    from chalice.test import Client

    import app as spool_app
    from chalicelib.api import http as api_http
    from tests.apikit import Api, installed, settings_for

    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)  # as on Lambda

    settings = settings_for(tmp_path, extra={"SPOOL_AUTH_FAILURES": "2/h"})
    with installed(settings), Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        statuses = [
            api.get(
                "/jobs",
                key="wrong-key",
                headers={"X-Forwarded-For": f"198.51.100.{n}", "X-Spool-Peer": f"10.9.9.{n}"},
            ).status
            for n in range(4)
        ]
    assert statuses == [401, 401, 429, 429]
