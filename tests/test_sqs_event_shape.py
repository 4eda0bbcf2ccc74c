"""An invocation of the SQS worker with an event that is not an SQS batch is logged, not
answered "nothing failed" in silence; an empty batch is simply nothing to do."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib import events
from tests.apikit import installed, settings_for
from tests.test_aws_events import QUEUE


@pytest.mark.parametrize(
    "event", [{}, {"Records": "x"}, {"Records": None}, {"detail": {}}, {"Records": ["x"]}]
)
def test_an_event_without_records_is_logged(
    event: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        tmp_path, store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1"
    )
    with mock_aws(), installed(settings), caplog.at_level(logging.WARNING, "spool.events"):
        assert events.handle_sqs(event, None) == {"batchItemFailures": []}
    assert any(
        "no Records list" in r.getMessage() or "not objects" in r.getMessage()
        for r in caplog.records
    )


def test_an_empty_batch_is_nothing_to_do(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(
        tmp_path, store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1"
    )
    with mock_aws(), installed(settings), caplog.at_level(logging.WARNING, "spool.events"):
        assert events.handle_sqs({"Records": []}, None) == {"batchItemFailures": []}
    assert not [r for r in caplog.records if r.name == "spool.events"]
