"""A Content-Encoding header sent twice, under `spool serve` and on Lambda.

Was (stop 49, found by sending one corpus to `spool serve` and, as API Gateway
events, to app.py): `spool serve`'s server joins a header's lines into one, so
`Content-Encoding: identity` twice reads `identity, identity`, a coding Spool does
not take (400 "not supported"); on Lambda the same request was taken as one
`identity` (201: the job stored), and `identity` then `gzip` was 400 in other words
("given more than once").

Now the event's lines of a header Spool reads whole (not a LISTED one, whose values
are compared) are joined as `spool serve`'s server joins them: the same request is
the same answer on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_lambda_vs_served import J1, JOB, JSON, Request, _req, answered_alike


def _encodings(*values: str) -> tuple[tuple[str, str], ...]:
    return (JSON, *(("Content-Encoding", value) for value in values))


CASES: list[tuple[Request, int]] = [
    (_req("POST", "/enqueue", JOB, headers=_encodings("identity", "identity")), 400),
    (_req("POST", "/enqueue", JOB, headers=_encodings("identity", "gzip")), 400),
    (_req("POST", "/enqueue", JOB, headers=_encodings("identity")), 201),
    (_req("POST", f"/jobs/{J1}/cancel", b"", headers=_encodings("identity", "identity")), 400),
    (_req("POST", f"/jobs/{J1}/cancel", b"", headers=_encodings("identity")), 200),
    # A header no route reads, twice with different values, is no refusal.
    (_req("POST", "/enqueue", JOB, headers=(JSON, ("X-Note", "a"), ("X-Note", "b"))), 201),
]


def test_a_repeated_content_encoding_is_answered_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = answered_alike(tmp_path, monkeypatch, CASES)
    assert served[0][1]["error"]["details"] == {"header": "Content-Encoding"}
