"""The sign-in check around every keyed request is a plain class (stop 42), not a
@contextmanager generator: what it counts and answers is pinned by test_limits_api.py
and test_api_auth.py; here, that a request's key check runs no contextlib frame, and
that what the check lets through or raises is unchanged in each case."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api import auth, routes
from chalicelib.api.http import ApiRequest
from chalicelib.api.throttle import RateLimited
from chalicelib.errors import Unauthorized
from tests.apikit import KEY_A, OPERATOR_KEY, TENANT_A, installed, settings_for
from tests.frame_watch import frames_entered


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[routes.Edge]:
    with installed(settings_for(tmp_path, extra={"SPOOL_AUTH_FAILURES": "2/h"})):
        yield routes.current()


def keyed(key: str | None, client: str = "10.1.1.1") -> ApiRequest:
    return ApiRequest(headers={} if key is None else {"x-api-key": key}, client=client)


def test_a_key_check_runs_no_contextlib_frame(edge: routes.Edge) -> None:
    tenants: list[str] = []
    called = frames_entered(lambda: tenants.append(edge.tenant(keyed(KEY_A))), "contextlib.py")
    assert tenants == [TENANT_A]
    assert called == []


def test_wrong_keys_count_then_429_and_the_owner_still_signs_in(edge: routes.Edge) -> None:
    assert edge.tenant(keyed(KEY_A)) == TENANT_A  # the owner, trusted at this address
    for guess in ("guess-1", "guess-2"):
        with pytest.raises(Unauthorized):
            edge.tenant(keyed(guess))
    with pytest.raises(RateLimited):
        edge.tenant(keyed("guess-3"))
    with pytest.raises(RateLimited):
        edge.tenant(keyed("guess-4"))  # not checked at all now
    assert edge.tenant(keyed(KEY_A)) == TENANT_A
    assert edge.tenant(keyed(KEY_A, client="10.2.2.2")) == TENANT_A  # another address


def test_an_operator_key_is_told_so_and_costs_no_allowance(edge: routes.Edge) -> None:
    for _ in range(4):
        with pytest.raises(auth.Forbidden) as told:
            edge.tenant(keyed(OPERATOR_KEY))
        assert "operator key" in told.value.message
    for _ in range(4):  # no key guesses nothing: it costs none either (stop 55)
        with pytest.raises(Unauthorized):
            edge.tenant(keyed(None))
    for guess in ("guess-1", "guess-2"):
        with pytest.raises(Unauthorized):
            edge.tenant(keyed(guess))
    with pytest.raises(RateLimited):
        edge.tenant(keyed("guess-3"))


def test_an_error_inside_the_check_goes_on_as_it_is(edge: routes.Edge) -> None:
    with pytest.raises(KeyError), edge._sign_in(keyed(KEY_A)):
        raise KeyError("not a sign-in")
    with pytest.raises(Unauthorized), edge._sign_in(keyed("guess-1")):
        raise Unauthorized("refused")


def test_one_sha256_per_key_check_and_the_owner_is_still_trusted(edge: routes.Edge) -> None:
    """The key check and the sign-in's record of the trusted key share one digest."""
    hashed: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and "sha256" in getattr(arg, "__name__", ""):
            hashed.append(arg.__name__)

    sys.setprofile(watch)
    try:
        assert edge.tenant(keyed(KEY_A)) == TENANT_A
    finally:
        sys.setprofile(None)
    assert len(hashed) == 1
    assert edge.sign_ins._trusted["10.1.1.1"][-1] == auth.digest(KEY_A)
