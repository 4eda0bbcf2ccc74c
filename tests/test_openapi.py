"""/openapi.json itself: every route, the right security, the live limits."""

from __future__ import annotations

from typing import Any

import pytest

import app as spool_app
from chalicelib.api.openapi import document
from chalicelib.config import Settings
from chalicelib.handlers import Registry, registry


@pytest.fixture
def doc(handlers: Registry) -> dict[str, Any]:
    return document(Settings(max_batch=7), handlers)


def test_every_route_and_method_is_documented(doc: dict[str, Any]) -> None:
    """HEAD, which every GET route takes (app.py: GET without the body), is not an
    operation of its own in the document: the GET's says what it answers."""
    served = {
        (path, method.lower())
        for path, methods in spool_app.app.routes.items()
        for method in methods
        if method != "HEAD"
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == served
    for path, methods in spool_app.app.routes.items():
        assert ("GET" in methods) == ("HEAD" in methods), path


def test_keyed_routes_document_401_and_public_ones_do_not(doc: dict[str, Any]) -> None:
    for path, ops in doc["paths"].items():
        for op in ops.values():
            public = op.get("security") == []
            assert ("401" in op["responses"]) is not public, path
            assert "503" in op["responses"]
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/metrics"]["get"]
    public = document(Settings(metrics_public=True), registry)
    assert public["paths"]["/metrics"]["get"]["security"] == []


def test_keyed_routes_document_the_400_of_a_key_given_twice(doc: dict[str, Any]) -> None:
    """A key given twice with different values is 400 on every keyed route, on both
    edges (tests/test_lambda_vs_served.py): /metrics and /openapi.json named no 400."""
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if op.get("security") == []:
                continue
            assert "different values" in op["responses"]["400"]["description"], path


@pytest.mark.parametrize("metrics_public", [False, True])
def test_every_route_documents_the_400_of_a_header_holding_a_control_character(
    handlers: Registry, metrics_public: bool
) -> None:
    """Any header value holding a control character is 400 on every route, public ones
    too, on both edges (tests/test_lambda_vs_served.py): the document said so only of
    a key, and /health, /ui and /ui/static named no 400 at all."""
    doc = document(Settings(metrics_public=metrics_public), handlers)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            description = op["responses"]["400"]["description"]
            assert "any header value holding a control character" in description.lower(), path


def test_status_documents_its_cache_header_and_limits(doc: dict[str, Any]) -> None:
    status = doc["paths"]["/status/{id}"]["get"]
    assert status["responses"]["200"]["headers"]["X-Cache"]["schema"]["enum"] == ["hit", "miss"]
    wait = next(p for p in status["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 20
    batch = doc["components"]["schemas"]["BatchEnqueueRequest"]
    assert batch["properties"]["jobs"]["maxItems"] == 7
    enqueue = doc["paths"]["/enqueue"]["post"]["responses"]
    assert {"200", "201", "400", "401", "413", "422", "503"} <= set(enqueue)


def test_each_job_type_documents_its_own_payload(doc: dict[str, Any]) -> None:
    variants = {
        v["properties"]["type"]["const"]: v
        for v in doc["components"]["schemas"]["EnqueueJob"]["oneOf"]
    }
    assert set(variants) == set(registry.types())
    sleep = variants["sleep"]
    assert "payload" in sleep["required"]
    assert sleep["properties"]["payload"]["properties"]["seconds"]["maximum"] == 900


def test_enqueue_documents_conflicts_and_the_schedule_bound(doc: dict[str, Any]) -> None:
    responses = doc["paths"]["/enqueue"]["post"]["responses"]
    conflict = responses["409"]["description"]
    assert "idempotency key" in conflict and "details.stored" in conflict
    assert "created=false" in conflict
    assert "366 days" in responses["422"]["description"]
    assert "NaN" in responses["400"]["description"]
    # Elsewhere 409 keeps its meaning: a job in the wrong state.
    cancel = doc["paths"]["/jobs/{id}/cancel"]["post"]["responses"]["409"]["description"]
    assert "state" in cancel
    variant = doc["components"]["schemas"]["EnqueueJob"]["oneOf"][0]["properties"]
    run_at = variant["run_at"]
    assert "366 days" in run_at["description"]
    delay = next(o for o in variant["delay"]["anyOf"] if o.get("type") == "number")
    assert delay["maximum"] == 366 * 24 * 3600
