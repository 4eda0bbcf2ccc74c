"""NewJob's hand-written __init__ (stop 42) takes what the dataclass's generated one
took, in the same order with the same defaults, and makes the same object: equal,
hashed, shown and frozen alike; it sets the fields in one call instead of ten."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.models import NewJob

WHEN = datetime(2030, 1, 1, tzinfo=UTC)


def generated() -> type:
    """The class the dataclass decorator would make with its own __init__."""
    return dataclasses.make_dataclass(
        "NewJob",
        [(f.name, f.type, f) for f in dataclasses.fields(NewJob)],
        frozen=True,
    )


def test_the_signature_is_the_fields_in_order_with_their_defaults() -> None:
    params = list(inspect.signature(NewJob.__init__).parameters.values())[1:]
    fields = dataclasses.fields(NewJob)
    assert [p.name for p in params] == [f.name for f in fields]
    for param, field in zip(params, fields, strict=True):
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        expected = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert param.default == expected, field.name


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("j_1", "echo", {"n": 1}, WHEN), {}),
        ((), {"id": "j_1", "type": "echo", "payload": {}, "run_at": WHEN, "queue": "q"}),
        (("j_2", "echo", {}, WHEN, "t", "q", 3, 7, "key", "http://127.0.0.1/hook"), {}),
        (("j_3", "echo", {}, WHEN), {"priority": -2, "idempotency_key": "k"}),
    ],
)
def test_the_same_object_as_the_generated_init(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    made = NewJob(*args, **kwargs)
    reference = generated()(*args, **kwargs)
    assert dataclasses.asdict(made) == dataclasses.asdict(reference)
    assert repr(made) == repr(reference)
    assert made == NewJob(*args, **kwargs)
    assert dataclasses.replace(made) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.id = "other"  # type: ignore[misc]


def test_missing_or_unknown_arguments_are_refused_as_before() -> None:
    with pytest.raises(TypeError):
        NewJob("j_1", "echo", {})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        NewJob("j_1", "echo", {}, WHEN, nope=1)  # type: ignore[call-arg]


def test_the_init_is_the_hand_written_one() -> None:
    """The generated one (compiled from "<string>") calls object.__setattr__ per field."""
    assert NewJob.__init__.__code__.co_filename.endswith("models.py")
