"""`chalice local` counts failed sign-ins by the connecting address, as `spool serve` does.

Was (stop 61, live: `chalice local` on 127.0.0.1, a guesser connecting from
127.0.0.2): chalice's local gateway puts 127.0.0.1 (LocalGateway.LOCAL_SOURCE_IP)
in every event's sourceIp, whatever the peer, so app.py saw one client. A guesser
anywhere (another host under `--host 0.0.0.0`, or another loopback address) spent
that one address's SPOOL_AUTH_FAILURES allowance and every key not yet signed in
through the server, its owner's included, was answered 429 unchecked. `spool
serve` counts the socket's peer (its own X-Spool-Peer header, overwritten) and
answered the owner 200.

Now chalice_local_http's handler puts the socket's peer in that header, replacing
any a client sent under that name, and app.py trusts it there as under `spool
serve`. A client still cannot choose its address by a header.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator

import pytest

from tests.apikit import KEY_A
from tests.test_chalice_local import serving_chalice_local

ALLOWED = 3
GUESSER = "127.0.0.2"
OWNER = "127.0.0.1"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {
        **os.environ,
        "SPOOL_API_KEYS": f"{KEY_A}=acme",
        "SPOOL_AUTH_FAILURES": f"{ALLOWED}/h",
    }
    with serving_chalice_local(tmp_path_factory.mktemp("chalice_local_peer"), env) as served:
        yield served


def _get(port: int, source: str, key: str, headers: dict[str, str] | None = None) -> int:
    """GET /jobs with `key` from the loopback address `source`: the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/jobs", headers={"X-API-Key": key, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_guesser_elsewhere_does_not_lock_the_owner_out(port: int) -> None:
    # Each guess claims another address in every header a client might use: none counts.
    statuses = []
    for n in range(ALLOWED + 2):
        spoof = f"10.9.8.{n}"
        statuses.append(
            _get(
                port,
                GUESSER,
                f"guess-{n:024d}",
                {
                    "X-Spool-Peer": spoof,
                    "X-Forwarded-For": spoof,
                    "X-Real-IP": spoof,
                    "Forwarded": f"for={spoof}",
                },
            )
        )
    assert statuses == [401] * ALLOWED + [429, 429]
    # The owner's key has never signed in; from its own address it is checked: 200.
    assert _get(port, OWNER, KEY_A) == 200


def test_claiming_the_owners_address_does_not_spend_its_allowance(port: int) -> None:
    source = "127.0.0.3"
    victim = "127.0.0.4"
    statuses = [
        _get(port, source, f"other-{n:024d}", {"X-Spool-Peer": victim}) for n in range(ALLOWED + 1)
    ]
    assert statuses == [401] * ALLOWED + [429]
    assert _get(port, victim, KEY_A) == 200
