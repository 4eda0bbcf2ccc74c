"""tests/moto_rollback.py: a cancelled TransactWriteItems leaves every item as it was.

The patch replaces moto's copy of the whole table with copies of the items a
transaction names; these tests hold it to what moto's copy restored, on a table
with a hash key and on one with a range key, for each way moto cancels one (a
failed condition after earlier items were written, and an item named twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import moto_rollback

REGION = "us-east-1"


@pytest.fixture
def ddb() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    moto_rollback.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName="flat",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.create_table(
            TableName="ranged",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        client.put_item(TableName="flat", Item={"pk": {"S": "kept"}, "n": {"N": "1"}})
        client.put_item(
            TableName="ranged", Item={"pk": {"S": "g"}, "sk": {"S": "kept"}, "n": {"N": "1"}}
        )
        yield client


def _everything(client: Any, table: str) -> list[dict[str, Any]]:
    items = client.scan(TableName=table)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item.get("sk", {}).get("S", "")))


def _backend_table(name: str) -> object:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables[name]


def test_a_failed_condition_undoes_the_items_written_before_it(ddb: Any) -> None:
    before = {table: _everything(ddb, table) for table in ("flat", "ranged")}
    table_object = _backend_table("flat")
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "flat", "Item": {"pk": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": "flat",
                        "Key": {"pk": {"S": "kept"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": "ranged", "Item": {"pk": {"S": "h"}, "sk": {"S": "x"}}}},
                {"Delete": {"TableName": "ranged", "Key": {"pk": {"S": "g"}, "sk": {"S": "kept"}}}},
                {
                    "ConditionCheck": {
                        "TableName": "flat",
                        "Key": {"pk": {"S": "absent"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert {table: _everything(ddb, table) for table in before} == before
    # The patch is what ran: moto's own undo puts a copy of the table in its place.
    assert _backend_table("flat") is table_object


def test_an_item_named_twice_undoes_the_first_write(ddb: Any) -> None:
    before = _everything(ddb, "flat")
    with pytest.raises(ddb.exceptions.ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "flat", "Item": {"pk": {"S": "twice"}, "n": {"N": "5"}}}},
                {"Delete": {"TableName": "flat", "Key": {"pk": {"S": "kept"}}}},
                {"Put": {"TableName": "flat", "Item": {"pk": {"S": "twice"}}}},
            ]
        )
    assert _everything(ddb, "flat") == before


def test_a_transaction_that_holds_writes_every_item(ddb: Any) -> None:
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "flat", "Item": {"pk": {"S": "new"}}}},
            {"Delete": {"TableName": "flat", "Key": {"pk": {"S": "kept"}}}},
            {
                "Update": {
                    "TableName": "ranged",
                    "Key": {"pk": {"S": "g"}, "sk": {"S": "kept"}},
                    "UpdateExpression": "SET n = :two",
                    "ExpressionAttributeValues": {":two": {"N": "2"}},
                }
            },
        ]
    )
    assert _everything(ddb, "flat") == [{"pk": {"S": "new"}}]
    assert _everything(ddb, "ranged") == [{"pk": {"S": "g"}, "sk": {"S": "kept"}, "n": {"N": "2"}}]
