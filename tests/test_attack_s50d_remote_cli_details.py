"""`spool` against a broken or hostile server (--url): a refusal whose details are not
shaped as Spool's is still one line and an exit code. An unknown_job_type 422 whose
details were a list, or whose "known" types were not strings, ended the command with
a Python traceback (AttributeError, TypeError) from the code meant to explain it.
Real loopback server; local.cli.main in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local import cli
from local.cli_errors import EXIT_USAGE
from tests.canned_answers import canned_servers

KEY = "attack-s50d-key-0123456789"


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, Any], str]]:
    """A server answering `status` with the given error JSON, on every request."""
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)
    with canned_servers() as start:
        yield lambda status, error: start(status, {"error": error})


@pytest.mark.parametrize(
    "details",
    [[1], "types", {"known": [1, None, {"a": 1}]}, {"known": "echo"}, {"known": None}],
)
def test_an_unknown_type_refusal_of_any_shape_is_one_line(
    refusing: Any, capsys: pytest.CaptureFixture[str], details: Any
) -> None:
    error = {"code": "unknown_job_type", "message": "unknown job type 'x'", "details": details}
    url = refusing(422, error)
    code = cli.main(["enqueue", "echo", "--url", url, "--key", KEY])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith("spool: unknown job type 'x'") and "Traceback" not in err
