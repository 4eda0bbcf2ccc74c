"""SqsDispatch.send_held names the jobs it could not send by their ids.

Found in stop 58 while looking at what an SQS send whose answer was lost leaves
behind: `send_held` (and `send`, through it) promises "the ids that could not be
sent", and returned the messages' bodies instead. A held job's body is
{"id": ..., "holds": N}, so events.py's callers, which ask `job_id in unsent`, took
every held job whose re-send failed (the network, a deleted queue, an answer lost
after botocore's tries) for sent: its old message was acknowledged and the job had
no message until `release_due` presumed it lost, `lost_after` (ten minutes) later,
where the old message was to be delivered again.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from chalicelib.storage.sqs_dispatch import SqsDispatch

URL = "http://127.0.0.1:9/000000000000/jobs"


class LostAnswers:
    """An SQS client whose every send's answer is lost (after botocore's tries)."""

    def send_message_batch(self, **_: Any) -> Any:
        raise ConnectionClosedError(endpoint_url=URL)


class Refuses:
    """An SQS client that answers, refusing every entry."""

    def send_message_batch(self, Entries: list[dict[str, Any]], **_: Any) -> Any:
        return {"Failed": [{"Id": e["Id"], "Code": "InternalError"} for e in Entries]}


@pytest.mark.parametrize("client", [LostAnswers(), Refuses()], ids=["lost", "refused"])
def test_the_jobs_a_send_left_unsent_are_named_by_their_ids(client: Any) -> None:
    dispatch = SqsDispatch(client, URL)
    held = [("j_held", 5.0, 2), ("j_plain", 0.0, 0)]
    assert sorted(dispatch.send_held(held)) == ["j_held", "j_plain"]
    assert dispatch.send([("j_other", 0.0)]) == ["j_other"]
    assert dispatch.failing is not None
