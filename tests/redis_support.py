"""Redis for tests: a fresh key prefix per test on the real server, deleted afterwards.

The server is 127.0.0.1:6379, database 0 (override with SPOOL_TEST_REDIS_URL).
Each test's keys live under their own `{spool_t_<hex>}:` prefix, so tests never
see each other's jobs and nobody else's keys are touched. When the server cannot
be reached, or a test needs redis-server to start a private one and it is
missing, the test skips with the reason, except in CI (CI=true) or with
SPOOL_REQUIRE_REDIS=1, where it fails with it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

BASE_URL = os.environ.get("SPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def must_run() -> bool:
    return (
        os.environ.get("SPOOL_REQUIRE_REDIS") == "1" or os.environ.get("CI", "").lower() == "true"
    )


def unavailable(reason: str) -> NoReturn:
    """Skip saying why; in CI (see must_run) fail saying why instead."""
    if must_run():
        pytest.fail(f"{reason} (required here: CI=true or SPOOL_REQUIRE_REDIS=1)")
    pytest.skip(reason)


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def admin(url: str = BASE_URL):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"Redis is not reachable at {url}: {exc}")
    return client


def drop_prefix(prefix: str, url: str = BASE_URL) -> int:
    """Delete every key of one store prefix (they all carry its hash tag)."""
    client = admin(url)
    try:
        gone = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match="{" + prefix + "}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                gone += client.delete(*batch)
                batch.clear()
        if batch:
            gone += client.delete(*batch)
        return gone
    finally:
        client.close()


@contextlib.contextmanager
def fresh_prefix(url: str = BASE_URL) -> Iterator[str]:
    """Yield the URL of a new, empty key namespace; delete its keys afterwards."""
    admin(url).close()  # skip or fail here, before anything is created
    prefix = f"spool_t_{secrets.token_hex(6)}"
    try:
        yield with_prefix(url, prefix)
    finally:
        drop_prefix(prefix, url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateServer:
    """A redis-server of the test's own: its own directory, port and persistence."""

    directory: Path
    port: int
    appendfsync: str = "always"  # "no": AOF off as well (nothing survives a kill)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH (Debian package redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "no" if self.appendfsync == "no" else "yes",
            "--appendfsync", "always" if self.appendfsync == "no" else self.appendfsync,
            "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"redis-server exited ({self.proc.returncode}): {log}")
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.BusyLoadingError:
                pass
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save; what is on disk is what was fsynced."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        self.proc = None


@contextlib.contextmanager
def private_server(directory: Path, appendfsync: str = "always") -> Iterator[PrivateServer]:
    server = PrivateServer(directory, free_port(), appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def port_of(url: str) -> int:
    return urlsplit(url).port or 6379


def script_commands(store: Any, call: Callable[[], object]) -> list[str]:
    """The commands Redis runs inside scripts (MONITOR's `lua` lines) on this store's
    keys while `call` runs: what a script reads is what it copies, and every client
    waits while it does."""
    sentinel = f"done-{uuid.uuid4().hex}"
    prefix = store._p
    seen: list[str] = []
    with store.client.monitor() as monitor:
        done = threading.Event()

        def run() -> None:
            try:
                call()
            finally:
                store.client.echo(sentinel)
                done.set()

        worker = threading.Thread(target=run)
        worker.start()
        while True:
            entry = monitor.next_command()
            command = str(entry["command"])
            if sentinel in command:
                break
            if entry.get("client_type") == "lua" and prefix in command:
                seen.append(command)
        worker.join(timeout=30)
    assert done.is_set()
    return seen
