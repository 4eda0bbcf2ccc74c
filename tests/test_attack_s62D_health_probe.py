"""/health's probe of a queue that lost a send is an action the API's role may take.

Stop 59 made /health forget a send that got no answer once the queue answers a
GetQueueAttributes (SqsDispatch.still_failing), so /health is not 503 for a whole
minute with SQS long back. On AWS /health is the API function's, and its role had no
sqs:GetQueueAttributes (infra/generate.py): moto checks no IAM, and the IAM walk
(tests/test_iam_actions.py) never lost a send. Deployed, every /health after a lost
send asked, was refused AccessDenied (one more denied call in CloudTrail per health
check), kept the failure and answered 503 for the minute: the stop-59 fix did not
hold where it mattered. Here IAM is played by refusing, as AccessDenied, any call the
acting function's role does not allow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.client
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.runtime import Runtime
from chalicelib.storage.sqs_dispatch import failure_of
from tests.apikit import Api
from tests.test_aws_events import store_of
from tests.test_iam_actions import _allowed, iam_actions, rt  # noqa: F401 (fixture)


@pytest.fixture
def as_api_role(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every AWS call is made as the API function: one its role lacks is refused."""
    denied: list[str] = []
    real = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]  # not in the stubs

    def checked(self: Any, operation: str, params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        lacking = [
            a for a in iam_actions(service, operation, params)
            if a.split(":", 1)[1] not in _allowed("api", service)
        ]  # fmt: skip
        if lacking:
            denied.extend(lacking)
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": f"not authorized: {lacking}"}},
                operation,
            )
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", checked)
    yield denied


def test_health_forgets_a_lost_send_once_the_queue_answers_the_api_role(
    rt: Runtime,  # noqa: F811 (the fixture)
    api: Api,
    as_api_role: list[str],
) -> None:
    assert api.get("/health").status == 200
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    # What a send whose answer was lost leaves (tests/test_chaos_s59a_health_after_sqs.py
    # makes it over real sockets); the queue answers again.
    dispatch.failing = failure_of(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    answer = api.get("/health")
    assert as_api_role == []
    assert answer.status == 200, answer.json
