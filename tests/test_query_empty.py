"""A request without a query string reads its route's defaults without walking an
empty query (stop 42): the same model, equal field for field, as the full read gives;
a route that takes no parameters shares one NoQuery, which holds nothing."""

from __future__ import annotations

import pytest
from chalice.app import MultiDict
from pydantic import BaseModel

from chalicelib.api import query, routes

MODELS: list[type[BaseModel]] = sorted(
    {query.NoQuery, *routes.QUERIES.values()}, key=lambda m: m.__name__
)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("empty", [{}, MultiDict({})], ids=["dict", "multidict"])
def test_an_empty_query_reads_as_the_models_defaults(model: type[BaseModel], empty: object) -> None:
    read = query.read(model, empty, "/route")  # type: ignore[arg-type]
    assert type(read) is model
    assert read.model_dump() == model.model_validate({}).model_dump()
    assert read == model.model_validate({})


def test_routes_taking_no_parameters_share_one_instance() -> None:
    assert query.read(query.NoQuery, {}) is query.read(query.NoQuery, {})


def test_the_shared_instance_takes_no_attribute() -> None:
    shared = query.read(query.NoQuery, {})
    with pytest.raises(ValueError):
        shared.anything = 1  # type: ignore[attr-defined]


def test_a_query_given_is_still_read_and_refused() -> None:
    with pytest.raises(Exception) as refused:
        query.read(query.NoQuery, {"x": "1"}, "/enqueue")
    assert "takes no query parameters" in str(refused.value.message)  # type: ignore[attr-defined]
