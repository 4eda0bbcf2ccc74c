"""`spool --url` at a server sending an endless answer told the person to "pass a
larger max_answer_bytes", which the command line has no way to pass (it is a Client
argument). Found from outside (stop 62): a loopback http.server answering GET /jobs
with an endless chunked body; `spool jobs` stopped at 64 MiB (right) and said
"(pass a larger max_answer_bytes if it is)". The command line now says the answer is
larger than any Spool route's and to check --url / SPOOL_URL.
"""

from __future__ import annotations

from local import remote_cli
from spool_client import AnswerTooLarge
from spool_client.calls import DEFAULT_MAX_ANSWER_BYTES

URL = "http://127.0.0.1:18250"


def test_the_command_line_gives_a_fix_it_can_follow() -> None:
    failure = remote_cli.explain(AnswerTooLarge(URL, DEFAULT_MAX_ANSWER_BYTES))
    said = f"{failure.problem} {failure.fix}"
    assert "max_answer_bytes" not in said  # not an option of the command line
    assert URL in failure.problem and str(DEFAULT_MAX_ANSWER_BYTES) in failure.problem
    assert "--url" in failure.fix and "SPOOL_URL" in failure.fix


def test_the_python_client_still_names_its_argument() -> None:
    assert "max_answer_bytes" in str(AnswerTooLarge(URL, 10))
