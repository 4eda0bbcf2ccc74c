"""A job type no handler has, sent with curl, was answered 422 "unknown job type
'my_report'" (details.known listing the server's types) and nothing more: a newcomer
who wrote a handler and forgot SPOOL_HANDLERS was not told how to register it. The
command lines said it (local/cli_errors.py, local/remote_cli.py), the HTTP answer did
not. Found following docs/handlers.md (s49, helper F). The refusal now names the fix;
a close misspelling still answers "did you mean", and the command lines say their
own fix once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.errors import UnknownJobType
from chalicelib.handlers import unknown_type
from chalicelib.runtime import Runtime
from local import remote_cli
from local.cli_errors import explain
from spool_client import errors as client_errors
from tests.apikit import Api, installed, settings_for


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


def test_a_type_no_handler_has_is_told_how_to_register_one(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "my_report", "payload": {}})
    assert reply.status == 422 and reply.error_code == "unknown_job_type", reply.body
    message = reply.json["error"]["message"]
    assert message.startswith("unknown job type 'my_report': ")
    for hint in ("@handler('my_report')", "SPOOL_HANDLERS", "docs/handlers.md", "known"):
        assert hint in message, message
    assert api.get("/jobs").json["jobs"] == []


def test_the_command_lines_say_their_fix_once() -> None:
    refusal = unknown_type("my_report", ["echo"])
    local = explain(refusal)
    assert local.problem == "unknown job type 'my_report'"
    assert local.fix is not None and "SPOOL_HANDLERS" in local.fix
    answer = client_errors.UnknownJobType(
        422, "unknown_job_type", refusal.message, {"type": "my_report", "known": ["echo"]}
    )
    remote = remote_cli.explain(answer)
    assert remote.problem == "unknown job type 'my_report'"


def test_a_close_misspelling_keeps_its_did_you_mean() -> None:
    refusal = unknown_type("ecko", ["echo"])
    assert isinstance(refusal, UnknownJobType)
    assert refusal.message == "unknown job type 'ecko'; did you mean 'echo'?"
