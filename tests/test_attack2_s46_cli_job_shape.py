"""`spool status ID` facing JSON that is a job only in part: a message, not a crash dump.

Found from outside (stop 46, second attack round): a loopback server answering a
job with `id`, `type`, `state`... but no `created_at` made `spool status` print
pydantic's "3 validation errors for Job ... For further information visit
https://errors.pydantic.dev/..." and exit 2, the code for the person's own
mistake; an `attempt_history` of the wrong shape ended in "unexpected error:
KeyError". The client already words JSON of another shape (UnexpectedResponse:
"the server answered JSON that is not a job"); the command now says the same,
exit 1, for what only the table needs.
"""

from __future__ import annotations

from typing import Any

import pytest

from local import cli
from tests.canned_http import CannedServer, json_answer

JOB_ID = "j_" + "0" * 32
JOB: dict[str, Any] = {
    "id": JOB_ID,
    "type": "echo",
    "queue": "default",
    "priority": 0,
    "state": "succeeded",
    "attempts": 1,
    "max_attempts": 3,
    "run_at": "2026-01-01T00:00:00Z",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:01Z",
}
ATTEMPT = {
    "number": 1,
    "started_at": "2026-01-01T00:00:00+00:00",
    "finished_at": "2026-01-01T00:00:01+00:00",
    "worker": "w",
    "outcome": "succeeded",
}


def status_against(job: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    server = CannedServer(json_answer(job))
    try:
        code = cli.main(["status", JOB_ID, "--url", server.url, "--key", "k" * 32])
    finally:
        server.close()
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize(
    "job",
    [
        {k: v for k, v in JOB.items() if k != "created_at"},
        {**JOB, "created_at": "yesterday"},
        {**JOB, "attempts": "one"},
        {**JOB, "attempt_history": [{"number": 1}]},
        {**JOB, "attempt_history": ["an attempt"]},
        {**JOB, "attempt_history": [{**ATTEMPT, "started_at": 5}]},
        {**JOB, "attempt_history": [{**ATTEMPT, "started_at": "noon"}]},
        {**JOB, "attempt_history": {"number": 1}},
    ],
    ids=[
        "no-created_at",
        "bad-date",
        "bad-count",
        "attempt-missing",
        "attempt-str",
        "attempt-int-date",
        "attempt-bad-date",
        "history-dict",
    ],
)
def test_a_job_of_another_shape_is_named_as_the_servers(
    job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = status_against(job, capsys)
    assert code == 1, text
    assert "answered JSON that is not a job" in text
    assert "pydantic" not in text and "unexpected error" not in text


def test_a_whole_job_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = status_against({**JOB, "attempt_history": [ATTEMPT]}, capsys)
    assert code == 0, text
    assert JOB_ID in text and "succeeded" in text
