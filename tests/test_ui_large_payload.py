"""The dashboard's job view of a payload made of many tiny values: it walks (and masks)
at most redaction.SHOWN_VALUES of them, marks what it cut, and never shows a secret
it did not walk. GET /status/{id} still answers the whole payload."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.log_redact import redactor
from chalicelib.ui import redaction
from tests.apikit import Api

MANY = 40_000


def _counting_shapes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every string the job view masks, in order (the per-value work the view does)."""
    seen: list[str] = []
    shapes = redactor.shapes

    def counted(text: str) -> str:
        seen.append(text)
        return shapes(text)

    monkeypatch.setattr(redactor, "shapes", counted)
    return seen


def test_the_job_view_walks_at_most_the_values_it_shows(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = api.enqueue({"type": "echo", "payload": {"i": ["a"] * MANY}, "delay": 600})
    seen = _counting_shapes(monkeypatch)
    items = api.get(f"/ui/api/jobs/{job}").json["payload"]["i"]
    assert len(seen) < MANY // 4  # was one call per string: MANY and more
    assert seen.count("a") <= redaction.SHOWN_VALUES
    assert len(items) <= redaction.SHOWN_VALUES
    assert items[:-1] == ["a"] * (len(items) - 1)
    assert items[-1] == redaction.MORE_ITEMS.format(MANY - (len(items) - 1))
    whole = api.get(f"/status/{job}").json["payload"]
    assert whole == {"i": ["a"] * MANY}  # the API's own read is not cut


def test_what_the_view_cuts_is_never_shown_and_what_it_shows_is_masked(api: Api) -> None:
    payload: dict[str, Any] = {
        "items": [{"token": f"s3cr3t-{n}"} for n in range(MANY // 8)],
        "headers": {"Authorization": "Basic later-s3cr3t"},
    }
    job = api.enqueue({"type": "echo", "payload": payload, "delay": 600})
    reply = api.get(f"/ui/api/jobs/{job}")
    shown = reply.json["payload"]
    assert b"s3cr3t" not in reply.body
    assert len(shown["items"]) < MANY // 8  # cut: not every one walked
    cut = {redaction.MORE_KEYS: "1 more"}  # the object the walk's end fell in
    assert all(item in ({"token": "***"}, cut) for item in shown["items"][:-1])
    assert shown["items"][-1].endswith("more items not shown]")
    assert list(shown) == ["items", redaction.MORE_KEYS]  # "headers" cut, not shown
    assert shown[redaction.MORE_KEYS] == "1 more"


def test_a_payload_within_the_limit_is_shown_whole() -> None:
    value = {"list": list(range(100)), "pairs": [["X-Api-Key", "k"]], "deep": {"a": {"b": 1}}}
    shown = redaction.mask(value)
    assert shown == {**value, "pairs": [["X-Api-Key", "***"]]}
    assert redaction.mask(value, shown=3) == {"list": [0, "[99 more items not shown]"]} | {
        redaction.MORE_KEYS: "2 more"
    }
