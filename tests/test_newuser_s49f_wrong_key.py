"""A wrong API key was answered 401 "invalid API key" and nothing more: a newcomer
following the README's curl lines after restarting `spool serve` (which, without
SPOOL_API_KEYS, makes a new key at each start) was not told what to send. The
command line said it (local/remote_cli.py), curl and the dashboard did not. Found
following the README (s49, helper F). The refusal now says where the keys come from
and that a dev key is new at each start; the command line still says it once."""

from __future__ import annotations

import pytest

from chalicelib.api.auth import INVALID_KEY, Keyring
from chalicelib.errors import Unauthorized
from local import remote_cli
from local.server import Server
from spool_client import errors as client_errors
from tests.apikit import KEY_A
from tests.served import exchange


def test_a_wrong_key_over_http_says_which_key_to_send(server: Server) -> None:
    status, answer = exchange(
        server,
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: dev-an-old-key-from-the-last-run\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 401
    message = answer["error"]["message"]
    assert message.startswith("invalid API key: ")
    for hint in ("API keys", "X-API-Key", "spool serve", "new at each start"):
        assert hint in message, message
    assert "dev-an-old-key" not in message  # never the key sent


def test_the_right_key_is_still_taken(server: Server) -> None:
    status, _ = exchange(
        server,
        f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status == 200


def test_the_command_line_says_the_fix_once() -> None:
    with pytest.raises(Unauthorized) as refused:
        Keyring.parse(f"{KEY_A}=t").tenant_for("wrong-key-0123456789")
    answer = client_errors.Unauthorized(401, "unauthorized", refused.value.message)
    failure = remote_cli.explain(answer)
    assert failure.problem == "invalid API key"
    assert "printed last" in failure.fix and INVALID_KEY not in failure.fix
