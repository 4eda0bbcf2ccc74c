"""The store contract again, on DynamoDB with every index split into three shards
and with no queue and no bucket: reads that merge shards keep their order, and
the contract holds whether or not anything delivers jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.storage.dynamodb import DynamoConfig, DynamoStore, create_resources, make_clients
from tests.contract.test_store_contract import *  # noqa: F403  (the contract's tests, run here)


@pytest.fixture
def store(clock: FakeClock) -> Iterator[DynamoStore]:
    with mock_aws():
        config = DynamoConfig(table="sharded", shards=3, counter_shards=2)
        ddb, _, _ = make_clients(config)
        create_resources(config, ddb)
        opened = DynamoStore(config, clock, ddb=ddb)
        assert opened.dispatch is None and opened.blobs is None
        yield opened
        opened.close()
