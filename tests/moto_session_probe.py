"""Run by tests/test_moto_session_order.py in a pytest process of its own (not
collected by the suite: its name is no test_*.py). Nothing here imports moto at
module level, so its first test makes the store's process-wide botocore session
before moto is imported, as a test against moto_server does."""

from __future__ import annotations

from chalicelib.storage.dynamodb_aws import DynamoConfig, make_clients


def test_the_process_session_is_made_outside_any_mock() -> None:
    make_clients(DynamoConfig(table="t", queue="q", bucket="b", endpoint="http://127.0.0.1:9"))


def test_then_clients_from_it_inside_mock_aws_are_answered_by_moto() -> None:
    from moto import mock_aws

    with mock_aws():
        ddb, _sqs, _s3 = make_clients(DynamoConfig(table="t", queue="q", bucket="b"))
        assert ddb.list_tables()["TableNames"] == []
