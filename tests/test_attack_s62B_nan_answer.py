"""A server answering NaN or Infinity (not JSON; Python's json reads them) had them
taken as numbers: the Python client returned a job whose result held nan and -inf,
and `spool status --json` printed `"x": NaN`, which jq and every strict JSON reader
refuse. Found from outside (stop 62): a loopback http.server answering GET /status
with a job whose result was {"x":NaN,"y":-Infinity}. Spool's own answers are encoded
with allow_nan=False (chalicelib/api/http.py), so such an answer is not Spool's JSON
and is now refused as that, as a body nested too deep is.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse
from tests.test_client_protocol import Scripted, scripted  # noqa: F401  (the fixture)

FAST = RetryPolicy(attempts=2, base=0.01, cap=0.05)
JOB = {"id": "j_" + "a" * 32, "type": "echo", "queue": "default", "priority": 0,
       "state": "succeeded", "attempts": 1, "max_attempts": 3, "payload": {},
       "last_error": None, "idempotency_key": None, "run_at": "2026-01-01T00:00:00Z",
       "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
       "started_at": None, "finished_at": None}  # fmt: skip


def _job_with(result: str) -> bytes:
    return json.dumps({**JOB, "result": "HOLE"}).replace('"HOLE"', result).encode()


@pytest.mark.parametrize("result", ['{"x": NaN}', "[-Infinity]", "Infinity"])
def test_nan_or_infinity_in_an_answer_is_not_spools_json(
    scripted: type[Scripted],  # noqa: F811
    result: str,
) -> None:
    server = scripted([(200, {"Content-Type": "application/json"}, _job_with(result))])
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(UnexpectedResponse):
        spool.get("j_" + "a" * 32)

    async def async_too() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.get("j_" + "a" * 32)

    with pytest.raises(UnexpectedResponse):
        asyncio.run(async_too())


def test_a_finite_answer_is_still_read(scripted: type[Scripted]) -> None:  # noqa: F811
    server = scripted([(200, {"Content-Type": "application/json"}, _job_with("1.5e300"))])
    with Client(server.url, "k", retry=FAST) as spool:
        assert spool.get("j_" + "a" * 32).result == 1.5e300
