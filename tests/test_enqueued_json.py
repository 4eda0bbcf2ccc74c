"""An enqueue's answer body is written directly (stop 42), the same text dumps gives
for Edge._enqueued's view: any id, state and status URL (a stage or base path is the
client's text: quotes, backslashes, controls, non-ASCII, lone surrogates), either
`created`."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.api import routes
from chalicelib.api.http import dumps
from chalicelib.models import JobState

texts = st.text() | st.sampled_from(['"', "\\", "\x00\x1f\x7f", "é😀", "\ud800", "</script>"])


@settings(max_examples=800, deadline=None)
@given(texts, texts | st.sampled_from([s.value for s in JobState]), texts, st.booleans())
def test_the_same_text_as_dumps(job_id: str, state: str, url: str, created: bool) -> None:
    view: dict[str, Any] = {"id": job_id, "state": state, "status_url": url, "created": created}
    assert routes.enqueued_json(view) == dumps(view)


def test_a_state_member_is_written_as_its_value() -> None:
    view = {"id": "j_1", "state": JobState.QUEUED, "status_url": "/status/j_1", "created": True}
    assert routes.enqueued_json(view) == dumps(view)
    assert routes.enqueued_json(view) == (
        '{"id":"j_1","state":"queued","status_url":"/status/j_1","created":true}'
    )
