"""`chalice local` and OPTIONS on a route.

Was (stop 49, found by sending OPTIONS to every route on each edge): `chalice local`
answered OPTIONS itself as a CORS preflight, 200 with Access-Control-* headers and no
body, to anyone: no key asked, no log line, none of the app's headers. `spool serve`
answers 405 method_not_allowed with an Allow header naming the route's methods, as it
answers any method a route lacks (tests/test_server.py), and app.py answers a Lambda
event with httpMethod OPTIONS the same (chalice's 405). Spool enables no CORS, so no
route has OPTIONS; the deployed API's gateway answers it as it answers every method a
route lacks, 404 from its gateway response, before the function.

Now `chalice local` hands OPTIONS to the app as any other method: 405 with Allow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import app as spool_app
from local.emulator import context
from tests.test_chalice_local import serving_chalice_local
from tests.test_lambda_vs_served import _req, gateway_event

KEY = "s49d-options-key-0123456789"
J1 = "j_" + "0" * 31 + "1"
# Each route, and the methods it takes (HEAD with every GET: app.py).
ROUTES = {
    "/enqueue": "POST",
    f"/status/{J1}": "GET, HEAD",
    "/jobs": "GET, HEAD",
    f"/jobs/{J1}/cancel": "POST",
    "/health": "GET, HEAD",
    "/metrics": "GET, HEAD",
    "/ui/api/jobs": "GET, HEAD",
    "/ui/api/dead/purge": "POST",
}
PREFLIGHT = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path: Path = tmp_path_factory.mktemp("s49d-chalice-local-options")
    with serving_chalice_local(tmp_path, {**os.environ, "SPOOL_API_KEYS": f"{KEY}=s49d"}) as port:
        yield f"http://127.0.0.1:{port}"


def _allowed(header: str) -> set[str]:
    return {method.strip() for method in header.split(",")}


@pytest.mark.parametrize("path", list(ROUTES))
def test_options_is_405_with_allow_on_chalice_local(base: str, path: str) -> None:
    reply = requests.options(f"{base}{path}", headers={**PREFLIGHT, "X-API-Key": KEY}, timeout=10)
    assert reply.status_code == 405, reply.text
    assert reply.json()["error"]["code"] == "method_not_allowed"
    assert _allowed(reply.headers["Allow"]) == _allowed(ROUTES[path])
    assert not any(name.lower().startswith("access-control-") for name in reply.headers)


def test_options_without_a_key_is_405_too(base: str) -> None:
    """The preflight asked no key: the 405 does not depend on one."""
    reply = requests.options(f"{base}/enqueue", headers=PREFLIGHT, timeout=10)
    assert reply.status_code == 405, reply.text


@pytest.mark.parametrize("path", list(ROUTES))
def test_a_lambda_event_for_options_is_the_same_405(path: str) -> None:
    """The answer the two servers now give is app.py's own for such an event."""
    event = gateway_event(_req("OPTIONS", path))
    answer = spool_app.app(event, context("api_handler"))
    assert answer["statusCode"] == 405
    allow = answer["headers"].get("Allow") or ", ".join(answer["multiValueHeaders"]["Allow"])
    assert _allowed(allow) == _allowed(ROUTES[path])
