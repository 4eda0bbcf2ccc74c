"""The AWS side of the DynamoDB store: its URL, its clients, its resources, its errors.

Kept apart from the store's logic so the store reads as job transitions, and so
tests, the local poller and the bench open clients and create resources the same
way the store does. boto3 is imported here: only when a dynamodb:// URL is chosen.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreNotMigrated, StoreUnavailable
from chalicelib.storage.dynamodb_schema import table_definition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

INLINE_LIMIT = 300 * 1024  # the biggest payload a record takes when there is no bucket
RECORD_LIMIT = 390 * 1024  # payload + result + the rest, under DynamoDB's 400 KB item limit

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class DynamoConfig:
    table: str
    queue: str | None = None
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    shards: int = 1  # index partitions per question; raise past a few hundred jobs/s
    counter_shards: int = 4
    offload_bytes: int = 100 * 1024  # payloads/results above this go to S3
    retention_days: float = 30.0  # TTL on finished jobs and idempotency keys
    reap_every: float = 0.0  # seconds between expired-lease sweeps inside claim (0: every claim)
    lost_after: float = 600.0  # a due job still waiting this long past its message is re-sent
    create: bool = False  # create the table, queue and bucket when missing (local use)

    @classmethod
    def from_url(cls, url: str) -> DynamoConfig:
        parts = urlsplit(url)
        table = (parts.netloc + parts.path).strip("/")
        if not table:
            raise ValueError(f"a dynamodb:// URL needs a table name: {url!r}")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}

        def number(key: str, default: float) -> float:
            raw = options.get(key)
            return default if raw in (None, "") else float(raw)

        config = cls(
            table=table,
            queue=options.get("queue") or None,
            bucket=options.get("bucket") or None,
            endpoint=options.get("endpoint") or None,
            region=options.get("region") or None,
            shards=int(number("shards", 1)),
            counter_shards=int(number("counter_shards", 4)),
            offload_bytes=int(number("offload_bytes", 100 * 1024)),
            retention_days=number("retention_days", 30.0),
            reap_every=number("reap_every", 0.0),
            lost_after=number("lost_after", 600.0),
            create=options.get("create", "").lower() in ("1", "true", "yes"),
        )
        if config.shards < 1 or config.counter_shards < 1:
            raise ValueError("shards and counter_shards must be at least 1")
        if not 0 < config.offload_bytes <= INLINE_LIMIT:
            raise ValueError(f"offload_bytes must be between 1 and {INLINE_LIMIT}")
        return config


_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _boto_session() -> boto3.session.Session:
    """One session per process: creating clients from it reuses the loaded service models."""
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session


def make_clients(config: DynamoConfig) -> tuple[DynamoDBClient, SQSClient, S3Client]:
    boto = BotoConfig(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=32,
    )
    session = _boto_session()
    with _session_lock:
        kwargs: dict[str, Any] = {"config": boto}
        if config.endpoint:
            kwargs["endpoint_url"] = config.endpoint
        if config.region:
            kwargs["region_name"] = config.region
        ddb = session.client("dynamodb", **kwargs)
        sqs = session.client("sqs", **kwargs)
        s3 = session.client("s3", **kwargs)
    return ddb, sqs, s3


def create_resources(
    config: DynamoConfig,
    ddb: DynamoDBClient,
    sqs: SQSClient | None = None,
    s3: S3Client | None = None,
) -> None:
    """Create what infra/resources.json creates on AWS, for moto and local runs."""
    try:
        ddb.describe_table(TableName=config.table)
    except ddb.exceptions.ResourceNotFoundException:
        ddb.create_table(**table_definition(config.table))
        ddb.get_waiter("table_exists").wait(
            TableName=config.table, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        ddb.update_time_to_live(
            TableName=config.table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
    if sqs is not None and config.queue and "://" not in config.queue:
        try:
            sqs.get_queue_url(QueueName=config.queue)
        except sqs.exceptions.QueueDoesNotExist:
            dlq = sqs.create_queue(QueueName=config.queue + "-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            redrive = {
                "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                "maxReceiveCount": 5,
            }
            sqs.create_queue(
                QueueName=config.queue, Attributes={"RedrivePolicy": json.dumps(redrive)}
            )
    if s3 is not None and config.bucket:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=config.bucket)


# -- errors ----------------------------------------------------------------------

_UNAVAILABLE = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
}


def aws_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Map AWS failures to the store's errors, so the edge answers 503, not 500."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise StoreNotMigrated(
                    "the DynamoDB table does not exist; deploy infra/ or open with ?create=1",
                    {"code": code},
                ) from exc
            if code in _UNAVAILABLE or code.startswith("5"):
                raise StoreUnavailable(f"DynamoDB is unavailable: {code}") from exc
            raise
        except BotoCoreError as exc:
            raise StoreUnavailable(f"AWS is unreachable: {type(exc).__name__}") from exc

    return wrapper
