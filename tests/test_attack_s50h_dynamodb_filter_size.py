"""A DynamoDB claim filters the due jobs of full limits out of its index reads
(chalicelib/storage/dynamodb_limits.py, PolicyClaim._filter). DynamoDB takes at most 100
values in an IN list (and 4 KB of expression); moto takes any number, so an operator's
SPOOL_LIMITS with more than 100 limits full at once would have failed every claim on AWS
only. The expression is checked here as DynamoDB would."""

from __future__ import annotations

import re
from typing import Any, cast

from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.storage.dynamodb_limits import PolicyClaim
from chalicelib.storage.dynamodb_schema import GSI_DUE, GSI_TENANT_DUE, Expr

DYNAMODB_IN_VALUES = 100
DYNAMODB_EXPRESSION_BYTES = 4096


def test_a_filter_of_many_full_limits_stays_within_dynamodb_s_bounds() -> None:
    limits = tuple(Limit("type", f"type-{i}", concurrency=1) for i in range(150)) + tuple(
        Limit("queue", f"queue-{i}", concurrency=1) for i in range(150)
    )
    claim = PolicyClaim(cast(Any, None), ClaimPolicy(limits), 0, 30, None)
    claim.full_types = [f"type-{i}" for i in range(150)]
    claim.full_queues = [f"queue-{i}" for i in range(150)]
    for index in (GSI_DUE, GSI_TENANT_DUE):
        expr = Expr()
        filter_ = claim._filter(expr, index)
        assert filter_ is not None
        for values in re.findall(r"IN \(([^)]*)\)", filter_):
            assert len(values.split(",")) <= DYNAMODB_IN_VALUES
        assert len(filter_.encode()) <= DYNAMODB_EXPRESSION_BYTES
