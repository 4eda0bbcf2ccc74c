"""The moto_server the tests start (tests/moto_proc.py, tests/moto_server_main.py)
keeps two promises of DynamoDB that plain moto_server breaks under concurrent
requests, each request on a thread of its own:

- a cancelled TransactWriteItems undoes its own writes and nobody else's: plain
  moto_server put back its copy of the table, taken before the transaction, so a
  write acknowledged meanwhile was lost (a finished job went back to `queued`), and
  copying a table another thread was adding to answered 500;
- a GetItem reads an item before or after an UpdateItem, never half-way: plain
  moto_server applied the update's actions in place, one at a time, and a read saw
  some of them (a job `dead` with no `finished_at`, CI stop 59).

Each test stops at the first broken promise and makes a bounded number of requests.
Against plain moto_server both failed (the first after 2 to 40 writes, the second
within a few hundred reads).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.moto_proc import MotoServer, moto_server

pytestmark = [pytest.mark.aws, pytest.mark.timeout(180)]

WRITES = 150  # acknowledged writes beside the refused transactions
READS = 150  # reads beside the updates
ATTRIBUTES = 30  # set by each update: the more it sets, the wider a half-applied one
ONE = {":one": {"N": "1"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as running:
        yield running


def client(server: MotoServer) -> Any:
    """A client of its own (botocore's are not shared across threads), without
    retries: a 500 is seen, not sent again."""
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
    return boto3.client(
        "dynamodb", endpoint_url=server.endpoint, region_name="us-east-1", config=config
    )


def new_table(ddb: Any) -> str:
    name = f"t{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def in_background(
    count: int, body: Callable[[int, threading.Event], None]
) -> Callable[[], list[BaseException]]:
    """`count` threads running body(index, stop) until `stop` is set; the returned
    function sets it, joins them and hands back what they raised."""
    stop = threading.Event()
    raised: list[BaseException] = []

    def run(index: int) -> None:
        try:
            body(index, stop)
        except BaseException as exc:  # reported by the test, not lost in a thread
            raised.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()

    def finish() -> list[BaseException]:
        stop.set()
        for thread in threads:
            thread.join(120)
        return raised

    return finish


def test_a_cancelled_transaction_undoes_no_write_made_beside_it(server: MotoServer) -> None:
    ddb = client(server)
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": {"S": "taken"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    refused = [0, 0]

    def refuse(index: int, stop: threading.Event) -> None:
        """Transactions that add to the counter and write an item of their own, then
        fail a condition: each is cancelled, as a repeated idempotency key is."""
        own = client(server)
        while not stop.is_set():
            try:
                own.transact_write_items(
                    TransactItems=[
                        {"Update": {"TableName": table, "Key": {"pk": {"S": "counter"}},
                                    "UpdateExpression": "ADD n :one",
                                    "ExpressionAttributeValues": ONE}},
                        {"Put": {"TableName": table, "Item": {"pk": {"S": f"tx{index}"}}}},
                        {"ConditionCheck": {"TableName": table, "Key": {"pk": {"S": "taken"}},
                                            "ConditionExpression": "attribute_not_exists(pk)"}},
                    ]
                )  # fmt: skip
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                refused[index] += 1

    finish = in_background(2, refuse)
    counts: list[int] = []
    try:
        for i in range(1, WRITES + 1):
            answer = ddb.update_item(
                TableName=table, Key={"pk": {"S": "counter"}}, UpdateExpression="ADD n :one",
                ExpressionAttributeValues=ONE, ReturnValues="UPDATED_NEW",
            )  # fmt: skip
            counts.append(int(answer["Attributes"]["n"]["N"]))
            ddb.put_item(TableName=table, Item={"pk": {"S": f"w{i}"}})
            if counts[-1] != i:
                break  # it counted a cancelled transaction's add, or lost one of ours
    finally:
        raised = finish()

    assert not raised, raised  # no 500, no answer but the cancellation
    assert sum(refused) > 0  # transactions were cancelled while the writes went on
    assert counts == list(range(1, len(counts) + 1)), counts  # each add counted once
    stored = ddb.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)
    assert stored["Item"]["n"] == {"N": str(len(counts))}  # none undone afterwards
    items = {item["pk"]["S"] for item in ddb.scan(TableName=table, ConsistentRead=True)["Items"]}
    written = {f"w{i}" for i in range(1, len(counts) + 1)}
    assert written <= items, sorted(written - items)  # every acknowledged put is kept
    assert not {"tx0", "tx1"} & items  # and no cancelled one


def test_a_get_item_never_reads_half_of_an_update_item(server: MotoServer) -> None:
    ddb = client(server)
    table = new_table(ddb)
    names = {f"#a{i}": f"a{i}" for i in range(ATTRIBUTES)}
    start = {f"a{i}": {"N": "0"} for i in range(ATTRIBUTES)}
    ddb.put_item(TableName=table, Item={"pk": {"S": "item"}, **start})
    setting_all = "SET " + ", ".join(f"#a{i} = :v" for i in range(ATTRIBUTES))
    updates = [0, 0]

    def update(index: int, stop: threading.Event) -> None:
        """Every attribute set to one value, a new one each time (odd or even by
        thread, so the two never write the same one)."""
        own = client(server)
        while not stop.is_set():
            updates[index] += 1
            value = str(updates[index] * 2 + index)
            own.update_item(
                TableName=table, Key={"pk": {"S": "item"}}, UpdateExpression=setting_all,
                ExpressionAttributeNames=names, ExpressionAttributeValues={":v": {"N": value}},
            )  # fmt: skip

    finish = in_background(2, update)
    torn: list[dict[str, Any]] = []
    try:
        for _ in range(READS):
            item = ddb.get_item(TableName=table, Key={"pk": {"S": "item"}})["Item"]
            if len({item[f"a{i}"]["N"] for i in range(ATTRIBUTES)}) > 1:
                torn.append(item)
                break
    finally:
        raised = finish()

    assert not raised, raised
    assert sum(updates) > 1  # the reads went on beside the updates
    assert not torn, f"read half of an update: {torn[0]}"
