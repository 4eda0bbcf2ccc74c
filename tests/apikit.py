"""Shared pieces for the HTTP edge tests: a runtime on a real SQLite file, two
tenants with their keys, and a thin JSON client over chalice.test.Client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.test import Client

from chalicelib import events
from chalicelib import runtime as runtime_module
from chalicelib.clock import Clock
from chalicelib.config import Settings
from chalicelib.runtime import Runtime, build_runtime

KEY_A, TENANT_A = "key-a-0123456789", "tenant-a"
KEY_B, TENANT_B = "key-b-9876543210", "tenant-b"
API_KEYS = f"{KEY_A}={TENANT_A},{KEY_B}={TENANT_B}"
# /metrics answers to an operator key only (a tenant's key gets 403).
OPERATOR_KEY = "key-ops-5555555555"


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp_path}/spool.db",
        "api_keys": API_KEYS,
        "concurrency": 4,
        "demo_handlers": True,
        "extra": {"SPOOL_METRICS_KEYS": f"{OPERATOR_KEY}=operator", **overrides.pop("extra", {})},
    }
    fields.update(overrides)
    return Settings(**fields)


@contextmanager
def installed(settings: Settings, clock: Clock | None = None) -> Iterator[Runtime]:
    """Make a runtime the process-wide one (what app.py uses) for the block."""
    rt = build_runtime(settings, clock)
    runtime_module.reset(rt)
    try:
        yield rt
    finally:
        events.shutdown()
        runtime_module.reset(None)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def error_code(self) -> str:
        return str(self.json["error"]["code"])


class Api:
    """JSON requests to app.py through chalice's test client (the Lambda path)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = KEY_A,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["X-API-Key"] = key
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        r = self.client.http.request(method, path, headers=sent, body=data)
        return Reply(r.status_code, dict(r.headers), r.body)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def enqueue(self, job: dict[str, Any], key: str = KEY_A) -> str:
        reply = self.post("/enqueue", job, key=key)
        assert reply.status == 201, reply.body
        return str(reply.json["id"])
