"""Query strings, read one way on every route.

Each route that takes query parameters names a pydantic model of them (QUERIES in
routes.py); every other route takes none. `read` is the only place a query string
is turned into values, so every parameter follows the same rules:

- a name given twice, or text that is not UTF-8, is a 400 (the query string
  itself is malformed), naming the parameter;
- a name the route does not take, an empty value (`?attempts=` or a bare
  `?attempts`), a value over MAX_VALUE characters, and a value its model refuses
  are a 422 (validation_error, as the API has always answered a bad parameter:
  the Python client raises ValidationFailed for it) whose message names the
  parameter and says what it takes;
- a yes/no parameter is `true`/`false` or `1`/`0`, nothing else: pydantic alone
  also read `yes`, `on`, `t`, `y`, `off`, `f` and `n`, so `?attempts=on` added
  attempts while `?attempts=of` (a typo for off) was refused, and which
  spellings worked was documented nowhere.

A few routes ignore their query string on purpose (IGNORED in routes.py): probes,
scrapers and browsers add their own (cache busters, a scrape config's `params`)
to routes that read nothing from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from chalicelib.api.errors import validation_details
from chalicelib.api.http import single_values
from chalicelib.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)

# Longer than any value a route takes (a cursor or a `find` is at most 200): a value
# past this is refused before any parsing, with its length rather than its text.
MAX_VALUE = 1000
# The one spelling set of a yes/no parameter (what the Python client sends: "true").
BOOLEANS: Mapping[str, bool] = {"true": True, "false": False, "1": True, "0": False}
BOOLEAN_SPELLINGS = "true or false (1 or 0)"


class NoQuery(BaseModel):
    """The parameters of a route that takes none."""

    model_config = ConfigDict(extra="forbid")


# What every request without a query string reads on a route that takes none (most
# POSTs): one shared instance, as it holds nothing and refuses any attribute set on it.
_NO_QUERY = NoQuery()


def _shown(name: str) -> str:
    """A parameter's name for a message: it is the client's text, so bounded."""
    return repr(name if len(name) <= 64 else name[:64] + "...")


def read(model: type[M], query: Mapping[str, str], route: str = "") -> M:
    """The route's parameters from the query string, or a refusal naming the one at fault."""
    if not query:  # nothing to check by name (about 20k instructions a request)
        return _NO_QUERY if model is NoQuery else _validated(model, {})  # type: ignore[return-value]
    values: dict[str, Any] = single_values(query)  # 400: a name twice, text not UTF-8
    fields = model.model_fields
    for name, value in values.items():
        if name not in fields:
            raise _unknown(model, name, route)
        if value == "":
            raise _refused(name, "is empty: leave it out, or give it a value", "empty")
        if len(value) > MAX_VALUE:
            raise _refused(
                name, f"is {len(value)} characters long; the limit is {MAX_VALUE}", "too_long"
            )
        if fields[name].annotation is bool:
            flag = BOOLEANS.get(value)
            if flag is None:
                raise _refused(name, f"must be {BOOLEAN_SPELLINGS}", "bool_parsing")
            values[name] = flag
    return _validated(model, values)


def _validated(model: type[M], values: dict[str, Any]) -> M:
    """The model of these values, or the 422 that names the parameter it refuses."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        details = validation_details(exc)
        first = details[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(
            f"query parameter {_shown(name)} is invalid: {reason}", details
        ) from None


def _refused(name: str, reason: str, kind: str) -> ValidationFailed:
    """A 422 in the shape pydantic's refusals have ({"loc", "msg", "type"} each)."""
    return ValidationFailed(
        f"query parameter {_shown(name)} {reason}",
        [{"loc": [name[:64]], "msg": reason, "type": kind}],
    )


def _unknown(model: type[BaseModel], name: str, route: str) -> ValidationFailed:
    taken = sorted(model.model_fields)
    where = route or "this route"
    if taken:
        message = f"{where} takes no query parameter {_shown(name)}; it takes: {', '.join(taken)}"
    else:
        message = f"{where} takes no query parameters (got {_shown(name)})"
    return ValidationFailed(
        message, [{"loc": [name[:64]], "msg": "unknown query parameter", "type": "extra_forbidden"}]
    )
