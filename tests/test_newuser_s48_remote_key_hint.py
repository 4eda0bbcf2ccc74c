"""The remote commands' hints name where the key came from, and why a key that
worked a minute ago is refused.

Found following the README: `make run` makes a new key at each start, so after a
restart the exported SPOOL_API_KEY is refused, and `spool jobs` said only "invalid
API key. Pass the key with --key or SPOOL_API_KEY." (the user had). And a job not
found said "check ... that --key is the key" to a user whose key came from
SPOOL_API_KEY, while every other hint names both ("--url / SPOOL_URL").
"""

from __future__ import annotations

from local import remote_cli
from local.cli_errors import EXIT_USAGE
from spool_client.errors import NotFound, Unauthorized


def test_an_invalid_key_says_spool_serve_makes_a_new_one_at_each_start() -> None:
    failure = remote_cli.explain(Unauthorized(401, "unauthorized", "invalid API key"))
    assert (failure.problem, failure.code) == ("invalid API key", EXIT_USAGE)
    assert "--key or SPOOL_API_KEY" in failure.fix
    assert "new key at each start" in failure.fix and "printed last" in failure.fix


def test_a_missing_key_is_not_told_about_restarts() -> None:
    message = "missing API key: send it in the X-API-Key header"
    failure = remote_cli.explain(Unauthorized(401, "unauthorized", message))
    assert failure.problem == "no API key given: the server needs one"
    assert "each start" not in failure.fix


def test_a_job_not_found_names_the_key_variable_too() -> None:
    error = NotFound(404, "not_found", "job j_x not found", {"id": "j_x"})
    failure = remote_cli.explain(error)
    assert failure.problem == "job j_x not found"
    assert "--key / SPOOL_API_KEY" in failure.fix, failure.fix
