"""The Python client points at the base address when the server has no such route.

Found as a new user: `Client("http://host:8000/ui").enqueue(...)` raised only
"404 not_found: no route for POST /ui/enqueue", while the `spool` CLI given the
same URL adds that --url must be the server's base address. The client's error now
says so too, in the same words (spool_client.errors.BASE_ADDRESS).
"""

from __future__ import annotations

from local import remote_cli
from spool_client import errors


def _no_route() -> errors.ApiError:
    error = {"code": "not_found", "message": "no route for POST /ui/enqueue", "details": None}
    return errors.error_for(404, {"error": error})


def test_a_missing_route_names_the_base_address() -> None:
    text = str(_no_route())
    assert text.startswith("404 not_found: no route for POST /ui/enqueue")
    assert errors.BASE_ADDRESS in text and "/health" in text


def test_a_missing_job_is_not_told_about_the_base_address() -> None:
    error = {"code": "not_found", "message": "job not found", "details": {"id": "j_x"}}
    assert "base address" not in str(errors.error_for(404, {"error": error}))


def test_the_cli_and_the_client_share_the_wording() -> None:
    failure = remote_cli.explain(_no_route())
    assert errors.BASE_ADDRESS in failure.fix
    assert failure.problem == "no route for POST /ui/enqueue"  # the hint once, in the fix
