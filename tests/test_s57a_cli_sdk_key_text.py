"""`spool enqueue --idempotency-key` and spool_client refuse a key holding a control
character before anything is stored or sent (stop 57, helper A).

Was: `spool enqueue echo --idempotency-key $'order\\n7'` stored the job, on the local
store and through a server alike, and Client.enqueue / enqueue_many sent any key. The
server now refuses such a key (tests/test_s57a_key_control_characters.py); the
command line says so as a usage error naming the option (exit 2), and the client
raises ValueError naming idempotency_key with nothing sent, a batch none of its jobs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local import cli
from local.server import Server
from spool_client import AsyncClient, Client, JobSpec, RetryPolicy
from tests.apikit import KEY_A
from tests.served import exchange, served

BAD = ["order\n7", "\u0000", "\u001b[31m", "k\u007f", "k\u0085"]
FAST = RetryPolicy(attempts=1, base=0.01, cap=0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with served(tmp_path) as running:
        yield running


def jobs_on(server: Server) -> list[Any]:
    head = f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    assert status == 200, answer
    return list(answer["jobs"])


def spool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused_as_usage(code: int, out: str, err: str, key: str) -> None:
    assert (code, out) == (2, "")
    assert "--idempotency-key" in err
    first = next(c for c in key if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)
    assert f"U+{ord(first):04X}" in err and "control character" in err
    assert first not in err.removesuffix("\n")  # named by its code point, not written


@pytest.mark.parametrize("key", BAD)
def test_spool_enqueue_on_the_local_store_refuses_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    db = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = spool(capsys, "enqueue", "echo", "--idempotency-key", key)
    refused_as_usage(code, out, err, key)
    assert not db.exists()  # refused before the store was made


@pytest.mark.parametrize("key", BAD)
def test_spool_enqueue_through_a_server_refuses_the_key(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    argv = ("enqueue", "echo", "--idempotency-key", key, "--url", server.url, "--key", KEY_A)
    refused_as_usage(*spool(capsys, *argv), key)
    assert jobs_on(server) == []


def test_spool_enqueue_still_takes_a_key_of_text(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    key = "caf\u00e9 order\u00a07"
    argv = ("enqueue", "echo", "--idempotency-key", key, "--json", "--url", server.url)
    code, out, err = spool(capsys, *argv, "--key", KEY_A)
    assert code == 0, err
    assert json.loads(out)["idempotency_key"] == key


@pytest.mark.parametrize("key", BAD)
def test_the_client_refuses_the_key_and_sends_nothing(server: Server, key: str) -> None:
    with Client(server.url, KEY_A, retry=FAST) as client:
        with pytest.raises(ValueError, match=r"^idempotency_key holds a control character, U\+"):
            client.enqueue("echo", {}, idempotency_key=key)
        jobs: list[Any] = [JobSpec("echo", {"n": n}, idempotency_key=f"k-{n}") for n in range(3)]
        jobs.append({"type": "echo", "idempotency_key": key})
        with pytest.raises(ValueError, match=r"^idempotency_key holds a control character"):
            client.enqueue_many(jobs, batch_size=1)  # one job a request: none sent either
    assert jobs_on(server) == []


def test_the_async_client_refuses_it_too(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, KEY_A, retry=FAST) as client:
            await client.enqueue("echo", {}, idempotency_key="order\r\n7")

    with pytest.raises(ValueError, match=r"idempotency_key holds a control character, U\+000D"):
        asyncio.run(scenario())
    assert jobs_on(server) == []


def test_the_client_refuses_a_lone_surrogate_by_name(server: Server) -> None:
    """Before: httpx's bare UnicodeEncodeError ("'utf-8' codec can't encode character
    '\\ud800' in position 21"), naming neither the field nor the job."""
    surrogate = r"^idempotency_key holds an unpaired surrogate, U\+D800"
    with (
        Client(server.url, KEY_A, retry=FAST) as client,
        pytest.raises(ValueError, match=surrogate),
    ):
        client.enqueue("echo", {}, idempotency_key="k\ud800")
    assert jobs_on(server) == []


def test_spool_enqueue_names_the_option_of_a_key_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Argument bytes that are not UTF-8 arrive surrogate-escaped ("k\\udcff")."""
    db = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    code, out, err = spool(capsys, "enqueue", "echo", "--idempotency-key", "k\udcff")
    assert (code, out) == (2, "")
    assert "argument --idempotency-key: an argument holds bytes that are not UTF-8" in err
    assert not db.exists()
