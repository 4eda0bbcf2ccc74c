"""Lists a user sizes (a worker's queues, the overview's queue names, ids in a batch)
against DynamoDB's expression limits: at most 100 operands in an IN, 4 KB per
expression, 300 operators, 100 keys to a BatchGetItem and 100 actions to a transaction.

moto enforces none of these, so every request the store makes here goes through a
botocore hook that checks it as DynamoDB would; a request past a limit is refused
with the ValidationException AWS would answer, so the store's own handling of it is
what is tested. Past what any expression can hold, the store refuses the list with
an error naming the limit, and SPOOL_QUEUES refuses it at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.models import JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import DynamoConfig, create_resources, make_clients
from chalicelib.storage.dynamodb_schema import MAX_LISTED, Expr, s
from tests.factories import new_job

IN_OPERANDS = 100
EXPRESSION_BYTES = 4096
OPERATORS = 300
BATCH_KEYS = 100
TRANSACTION_ACTIONS = 100
# Logical and comparison operators, IN, BETWEEN and functions, as DynamoDB counts them.
_OPERATOR = re.compile(
    r"\b(AND|OR|NOT|IN|BETWEEN)\b|<>|<=|>=|(?<![<>])=|(?<![<>=])<(?![>=])|(?<![<-])>(?!=)"
    r"|\b(attribute_exists|attribute_not_exists|attribute_type|begins_with|contains|size)\("
)


def _problems(expression: str) -> list[str]:
    found = []
    if len(expression.encode()) > EXPRESSION_BYTES:
        found.append(f"expression of {len(expression.encode())} bytes")
    for operands in re.findall(r"\bIN \(([^)]*)\)", expression):
        if len(operands.split(",")) > IN_OPERANDS:
            found.append(f"IN with {len(operands.split(','))} operands")
    if len(_OPERATOR.findall(expression)) > OPERATORS:
        found.append(f"{len(_OPERATOR.findall(expression))} operators")
    return found


def _expressions(params: dict[str, Any]) -> Iterator[str]:
    for key, value in params.items():
        if key.endswith("Expression") and isinstance(value, str):
            yield value
    for action in params.get("TransactItems", []):
        for inner in action.values():
            yield from _expressions(inner)
    for request in params.get("RequestItems", {}).values():
        if isinstance(request, dict):
            yield from _expressions(request)


class DynamoLimits:
    """A provide-client-params hook: refuses what DynamoDB refuses, records it."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.requests = 0

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests += 1
        problems = [p for e in _expressions(params) for p in _problems(e)]
        if len(params.get("TransactItems", [])) > TRANSACTION_ACTIONS:
            problems.append(f"{len(params['TransactItems'])} transaction actions")
        for request in params.get("RequestItems", {}).values():
            if isinstance(request, dict) and len(request.get("Keys", [])) > BATCH_KEYS:
                problems.append(f"{len(request['Keys'])} keys in one BatchGetItem")
        if problems:
            self.refused.append(f"{model.name}: {', '.join(problems)}")
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "; ".join(problems)}},
                model.name,
            )


@pytest.fixture
def limits() -> DynamoLimits:
    return DynamoLimits()


@pytest.fixture
def store(clock: FakeClock, limits: DynamoLimits) -> Iterator[DynamoStore]:
    with mock_aws():
        config = DynamoConfig(table="jobs", queue=None, bucket=None)
        ddb, sqs, s3 = make_clients(config)
        create_resources(config, ddb, sqs, s3)
        ddb.meta.events.register("provide-client-params.dynamodb.*", limits)
        yield DynamoStore(config, clock, ddb=ddb)


QUEUES = [f"tenant-queue-{i:03d}" for i in range(250)]  # a worker's SPOOL_QUEUES


def test_a_worker_on_250_queues_claims_on_dynamodb(
    store: DynamoStore, clock: FakeClock, limits: DynamoLimits
) -> None:
    """Each IN past 100 operands made every claim of such a worker fail on AWS, with a
    ValidationException from deep in a claim; the store now splits the list."""
    wanted = store.add([new_job(clock, queue=QUEUES[-1])])[0].job.id
    store.add([new_job(clock, queue="elsewhere")])
    assert store.next_due_at(QUEUES) is not None
    assert set(store.oldest_due(QUEUES)) == {QUEUES[-1]}
    [job] = store.claim(10, 30.0, QUEUES)
    assert job.id == wanted
    assert store.claim(10, 30.0, QUEUES) == []
    assert limits.refused == [] and limits.requests > 0


def test_the_overview_of_more_than_100_queues_reads_on_dynamodb(
    store: DynamoStore, clock: FakeClock, limits: DynamoLimits
) -> None:
    """The overview (`spool top`, the all-tenant dashboard) asks oldest_due for up to
    its 200 busiest queues: past 100 it failed on AWS."""
    from chalicelib.ui.views import QUEUES_SHOWN, overview

    names = [f"q{i:03d}" for i in range(150)]
    store.add([new_job(clock, queue=q) for q in names])
    assert QUEUES_SHOWN > IN_OPERANDS
    page = overview(store, None, 60.0)
    assert page is not None
    assert set(store.oldest_due(names)) == set(names)
    assert limits.refused == []


def test_ids_by_the_hundreds_stay_within_a_request(
    store: DynamoStore, clock: FakeClock, limits: DynamoLimits
) -> None:
    ids = [r.job.id for r in store.add([new_job(clock, queue="q") for _ in range(250)])]
    claimed = store.claim(250, 30.0, ids=ids)
    assert len(claimed) == 250
    assert limits.refused == []
    assert store.get(ids[0]) is not None
    assert all(job.state is JobState.RUNNING for job in claimed)


def test_past_what_an_expression_holds_the_store_refuses_with_the_limit_named(
    store: DynamoStore, limits: DynamoLimits
) -> None:
    too_many = [f"q{i}" for i in range(MAX_LISTED + 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_LISTED}"):
        store.claim(1, 30.0, too_many)
    with pytest.raises(ValueError, match=f"at most {MAX_LISTED}"):
        Expr().one_of("queue", [s(q) for q in too_many])
    assert limits.refused == []  # refused before any request, not by DynamoDB
    # Repeats are one name: they neither count nor reach the expression twice.
    text = Expr().one_of("queue", [s("a")] * (MAX_LISTED + 5))
    assert text.count(":v") == 1


def test_spool_queues_past_the_limit_is_refused_at_start() -> None:
    names = ",".join(f"q{i}" for i in range(MAX_LISTED + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_LISTED}"):
        Settings.from_env({"SPOOL_QUEUES": names})
    at_limit = ",".join(f"q{i}" for i in range(MAX_LISTED))
    assert len(Settings.from_env({"SPOOL_QUEUES": at_limit}).queues or ()) == MAX_LISTED


def test_the_longest_list_allowed_fits_every_expression_the_store_builds(
    store: DynamoStore, clock: FakeClock, limits: DynamoLimits
) -> None:
    names = [f"q{i:03d}" for i in range(MAX_LISTED)]
    store.add([new_job(clock, queue=names[-1])])
    assert store.next_due_at(names) is not None
    assert store.oldest_due(names)
    assert len(store.claim(5, 30.0, names)) == 1
    assert limits.refused == []


def test_a_limited_claim_on_250_queues_claims_on_dynamodb(
    store: DynamoStore, clock: FakeClock, limits: DynamoLimits
) -> None:
    """The claim under limits and fair turns (dynamodb_limits.py) lists the queues in
    its index filter and in each claim's condition."""
    from chalicelib.limits import ClaimPolicy, Limit

    policy = ClaimPolicy((Limit("queue", QUEUES[0], concurrency=1),), fair=True)
    wanted = store.add([new_job(clock, queue=QUEUES[-1], tenant="t1")])[0].job.id
    [job] = store.claim(10, 30.0, QUEUES, policy=policy)
    assert job.id == wanted
    assert limits.refused == []
