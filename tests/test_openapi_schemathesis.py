"""Schemathesis against /openapi.json over the real served socket: no 5xx, and
no response that breaks the document (status codes, headers, bodies, content
types), for data that fits the document and for data that does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CheckFunction
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance

import app as spool_app
from chalicelib.handlers import registry
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, installed, settings_for

AUTH = {"X-API-Key": KEY_A}
# schemathesis.openapi.from_url leaves out the operation at the URL it loaded the
# document from; tests/test_openapi.py checks /openapi.json itself.
OPERATIONS = sorted(
    f"{method} {path}"
    for path, methods in spool_app.app.routes.items()
    for method in methods
    if path != "/openapi.json" and method != "HEAD"  # GET without the body: not documented
)
# Operations with inputs a document can describe (query or body); the others
# take only a path id, which any string satisfies, so nothing invalid exists.
HAS_INPUTS = [
    "POST /enqueue",
    "GET /status/{id}",
    "GET /jobs",
    "GET /dlq",
    "POST /dlq/redrive",
    "GET /ui/api/jobs",
    "POST /ui/api/dead/redrive",
    "POST /ui/api/dead/purge",
]
# A cursor is opaque: any string fits the document, and a string that is not one
# we issued is refused with the documented 400, which positive_data_acceptance
# (a heuristic, not a conformance check) counts against us.
OPAQUE_CURSOR = {"GET /jobs", "GET /dlq", "GET /ui/api/jobs"}
# A generated body may exceed the server's body limit, which JSON Schema cannot state:
# the documented 413 is then a right answer to valid and invalid data alike, and
# a_413_is_over_the_limit holds every 413 to a body really over the limit. The rest of
# each list is schemathesis's own (4.x), which a configured list replaces.
NEGATIVE_REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
NEGATIVE_REFUSALS += ["428", "429", "5xx"]  # 5xx still fails not_a_server_error
POSITIVE_ANSWERS = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]
CONFIG = {
    "checks": {
        "negative_data_rejection": {"expected-statuses": NEGATIVE_REFUSALS},
        "positive_data_acceptance": {"expected-statuses": POSITIVE_ANSWERS},
    }
}


@contextmanager
def served(tmp: Path, **overrides: Any) -> Iterator[str]:
    """The app over a real socket, for the block; its base URL."""
    # The fuzzer sends wrong keys from one address by design, thousands of times: the
    # failed sign-in throttle (tested in test_limits_api) would answer them 429.
    settings = settings_for(tmp, max_batch=5, extra={"SPOOL_AUTH_FAILURES": "off"}, **overrides)
    with installed(settings):
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=4)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(tmp_path_factory.mktemp("schemathesis")) as url:
        yield url


def load_operations(base_url: str) -> dict[str, Any]:
    """Every documented operation by "METHOD /path"."""
    # schemathesis.pytest.from_fixture does not run under pytest 9 (it reads a
    # private node attribute), so operations are driven with hypothesis directly.
    loaded = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json",
        config=SchemathesisConfig.from_dict(CONFIG),
        headers=AUTH,
        timeout=10,
    )
    found = {}
    for result in loaded.get_all_operations():
        if isinstance(result, Err):  # an operation the document states wrongly
            raise result.err()
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


@pytest.fixture(scope="module")
def operations(base_url: str) -> dict[str, Any]:
    return load_operations(base_url)


def test_the_document_lists_every_route(operations: dict[str, Any]) -> None:
    assert sorted(operations) == OPERATIONS


def _beyond_schema(type_: str) -> bool:
    """True when a handler checks what JSON Schema cannot state (field or model
    validators, or an admission check that depends on the tenant): a schema-valid
    payload may still be refused."""
    spec = registry.get(type_)
    model = spec.payload_model
    if spec.admit is not None:
        return True
    if model is None:
        return False
    decorators = model.__pydantic_decorators__
    return bool(decorators.field_validators or decorators.model_validators)


def _run_at_out_of_bounds(error: dict[str, Any]) -> bool:
    """run_at at most 366 days after now (and representable in UTC): a bound relative
    to the clock, which JSON Schema cannot state."""
    if error["message"].startswith("run_at must be"):
        return True
    details = error.get("details")
    return (
        isinstance(details, list)
        and bool(details)
        and all(isinstance(d, dict) and d.get("loc", [None])[-1] == "run_at" for d in details)
    )


def _callback_refused(error: dict[str, Any]) -> bool:
    """A callback_url the tenant may not use: no webhook secret configured, or a URL
    the SSRF guard refuses. Server settings decide both, which JSON Schema cannot state."""
    details = error.get("details")
    return isinstance(details, dict) and details.get("field") == "callback_url"


def _over_the_body_limit(response: Any) -> bool:
    """A 413 for a body that really is over the limit the server names: the bytes the
    request sent are more than it (a byte size is something no schema states)."""
    error = response.json()["error"]
    limit = (error.get("details") or {}).get("limit")
    sent = response.request.body or b""
    size = len(sent.encode() if isinstance(sent, str) else sent)
    return error["code"] == "payload_too_large" and isinstance(limit, int) and size > limit


def _not_blank(case: schemathesis.Case[Any]) -> bool:
    """False for a body of whitespace alone: the API reads it as no body
    (chalicelib/api/http.py parse_json), which a route whose body is optional takes,
    so it is no invalid data there (POST /dlq/redrive's "\\n", found at 1,500 examples)."""
    body = case.body
    return not (isinstance(body, (bytes, str)) and not body.strip())


def _signed_in(case: schemathesis.Case[Any]) -> dict[str, str] | None:
    """The key to send over the case's own headers: none when the case negates its
    headers. A case that left out the required X-API-Key got it back from our
    override, so a request whose other negation serialized away (an extra query
    parameter) was valid and answered 200, which schemathesis then counts as invalid
    data accepted (GET /dlq, found at 1,500 examples; a helper's run met GET /jobs)."""
    meta = case.meta
    headers = meta.components.get(ParameterLocation.HEADER) if meta is not None else None
    if headers is not None and headers.mode.is_negative:
        return None
    return AUTH


def a_413_is_over_the_limit(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> None:
    """A schemathesis check: 413 only for a body over the limit."""
    if response.status_code == 413:
        assert _over_the_body_limit(response), response.text


# chalicelib/handlers.py's two refusals: by the payload model, by the admission check.
HANDLER_REFUSALS = ("payload does not match", "payload refused for the")


def _refused_only_by_handler_validators(case: schemathesis.Case[Any], body: Any) -> bool:
    """A 422 on schema-valid jobs is acceptable only when every refused job is of a
    type whose model validates beyond its schema, and the refusal came from that model,
    or its run_at is past the bound relative to now."""
    error = body["error"]
    sent: Any = case.body  # the JSON body the case sent (an object here)
    if "jobs" in sent and isinstance(error["details"], list) and "index" in error["details"][0]:
        problems = error["details"]
        return all(
            (
                p["message"].startswith(HANDLER_REFUSALS)
                and _beyond_schema(sent["jobs"][p["index"]]["type"])
            )
            or _run_at_out_of_bounds(p)
            or _callback_refused(p)
            for p in problems
        )
    if _run_at_out_of_bounds(error) or _callback_refused(error):
        return True
    return error["message"].startswith(HANDLER_REFUSALS) and _beyond_schema(sent["type"])


CASES = [(label, schemathesis.GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, schemathesis.GenerationMode.NEGATIVE) for label in HAS_INPUTS
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_the_served_api_keeps_its_document(
    operations: dict[str, Any], label: str, mode: schemathesis.GenerationMode
) -> None:
    drive(operations[label], label, mode)


def drive(
    operation: Any,
    label: str,
    mode: schemathesis.GenerationMode,
    alter: Callable[[schemathesis.Case[Any]], schemathesis.Case[Any]] = lambda case: case,
) -> list[int]:
    """Send 40 generated cases of one mode to one operation, each first passed through
    `alter`; every check must hold. Answers the status codes seen."""
    seen: list[int] = []
    positive = mode is schemathesis.GenerationMode.POSITIVE
    handler_checked = positive and label == "POST /enqueue"
    excluded: list[CheckFunction] = (
        [positive_data_acceptance] if label in OPAQUE_CURSOR or handler_checked else []
    )

    @given(case=operation.as_strategy(generation_mode=mode).filter(_not_blank).map(alter))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(
            headers=_signed_in(case),
            excluded_checks=excluded,
            additional_checks=[a_413_is_over_the_limit],
            timeout=30,
        )
        seen.append(response.status_code)
        if handler_checked and response.status_code == 409:
            # A reused idempotency key with other fields: depends on what is stored.
            assert response.json()["error"]["code"] == "idempotency_conflict", response.text
            return
        if handler_checked and response.status_code == 413:
            return  # held to a body over the limit by a_413_is_over_the_limit
        if handler_checked and response.status_code >= 300:
            # positive_data_acceptance, less what no document can promise.
            assert response.status_code == 422, response.text
            assert _refused_only_by_handler_validators(case, response.json()), response.text

    check()
    return seen
