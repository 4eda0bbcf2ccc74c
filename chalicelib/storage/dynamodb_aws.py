"""The AWS side of the DynamoDB store: its URL, its clients, its resources, its errors.

Kept apart from the store's logic so the store reads as job transitions, and so
tests, the local poller and the bench open clients and create resources the same
way the store does. boto3 is imported here: only when a dynamodb:// URL is chosen.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError

from chalicelib.aws_proxies import endpoint_proxies
from chalicelib.errors import StoreNotMigrated, StoreUnavailable, UncertainWrite
from chalicelib.number_text import too_small, underflows
from chalicelib.storage import config_error, url_options
from chalicelib.storage.dynamodb_schema import table_definition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

INLINE_LIMIT = 300 * 1024  # the biggest payload a record takes when there is no bucket
RECORD_LIMIT = 390 * 1024  # payload + result + the rest, under DynamoDB's 400 KB item limit
# What create=1 gives the jobs queue, as infra/generate.py gives the deployed one
# (tests/test_infra.py checks they agree): deliveries before the dead-letter queue, and
# the visibility timeout, twice run_jobs' 240 s Lambda timeout (docs/aws.md).
MAX_RECEIVE_COUNT = 4
VISIBILITY_TIMEOUT = 480
# The options a dynamodb:// URL takes (DynamoConfig's fields; docs/aws.md).
URL_OPTIONS = (
    "queue",
    "bucket",
    "endpoint",
    "region",
    "shards",
    "counter_shards",
    "offload_bytes",
    "retention_days",
    "reap_every",
    "lost_after",
    "create",
)
FLAG_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)

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
        options = url_options(parts.query, "dynamodb", URL_OPTIONS)

        def number(key: str, default: float, least: float = 0.0) -> float:
            raw = options.get(key)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if underflows(raw, value):  # 1e-400 is not 0 (reap_every=0: at every claim)
                raise config_error(f"{key}: {too_small(raw)}; write 0 if you mean 0")
            if not least <= value < float("inf"):  # also refuses NaN
                raise config_error(f"{key} must be a number of at least {least:g}, not {raw!r}")
            return value

        def whole(key: str, default: int) -> int:
            raw = options.get(key, str(default))
            if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
                raise config_error(f"{key} must be a whole number of at least 1, not {raw!r}")
            return int(raw)

        create = options.get("create", "0").lower()
        if create not in FLAG_WORDS:
            raise config_error(f"create must be 1 or 0 (true or false), not {create!r}")
        config = cls(
            table=table,
            queue=options.get("queue"),
            bucket=options.get("bucket"),
            endpoint=options.get("endpoint"),
            region=options.get("region"),
            shards=whole("shards", 1),
            counter_shards=whole("counter_shards", 4),
            offload_bytes=whole("offload_bytes", 100 * 1024),
            retention_days=number("retention_days", 30.0),
            reap_every=number("reap_every", 0.0),
            lost_after=number("lost_after", 600.0),
            create=FLAG_WORDS[create],
        )
        if not 0 < config.offload_bytes <= INLINE_LIMIT:
            raise config_error(f"offload_bytes must be between 1 and {INLINE_LIMIT}")
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
        proxies=endpoint_proxies(config.endpoint),  # moto_server on loopback: direct
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


# What AWS answers when `create=1` asks for a resource under a name it never takes,
# with the URL option that named it and the rule (SQS's and S3's naming rules).
REFUSED_NAMES = {
    "InvalidBucketName": (
        "bucket",
        "S3 bucket",
        "3-63 lowercase letters, digits, dots and hyphens, beginning and ending with a "
        "letter or digit",
    ),
    "InvalidParameterValue": (
        "queue",
        "SQS queue",
        "1-76 letters, digits, hyphens and _: create=1 also makes QUEUE-dlq",
    ),
}


@contextlib.contextmanager
def _named_by_url(config: DynamoConfig) -> Iterator[None]:
    """A name AWS refuses as `create=1` makes the resource, as the URL error it is:
    `bucket=b` was "unexpected error: ClientError: ... InvalidBucketName ... Rerun
    with SPOOL_DEBUG=1", naming neither the setting nor the option to change."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in REFUSED_NAMES:
            raise
        option, kind, rule = REFUSED_NAMES[code]
        name = getattr(config, option)
        raise config_error(f"{option} {name!r} is no {kind} name AWS takes ({rule})") from None


def create_resources(
    config: DynamoConfig,
    ddb: DynamoDBClient,
    sqs: SQSClient | None = None,
    s3: S3Client | None = None,
) -> None:
    """Create what infra/resources.json creates on AWS, for moto and local runs.

    Two processes may do it at once (docs/aws.md starts `spool serve` and the poller
    together): a table the other is creating is waited for, not an error."""
    try:
        ddb.describe_table(TableName=config.table)
    except ddb.exceptions.ResourceNotFoundException:
        try:
            ddb.create_table(**table_definition(config.table))
        except ddb.exceptions.ResourceInUseException:
            created = False  # the other process made it and sets its TTL
        else:
            created = True
        ddb.get_waiter("table_exists").wait(
            TableName=config.table, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        if created:
            ddb.update_time_to_live(
                TableName=config.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )
    if sqs is not None and config.queue and "://" not in config.queue:
        try:
            sqs.get_queue_url(QueueName=config.queue)
        except sqs.exceptions.QueueDoesNotExist:
            with _named_by_url(config):
                dlq = sqs.create_queue(QueueName=config.queue + "-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            redrive = {
                "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                "maxReceiveCount": MAX_RECEIVE_COUNT,
            }
            sqs.create_queue(
                QueueName=config.queue,
                Attributes={
                    "RedrivePolicy": json.dumps(redrive),
                    "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
                },
            )
    if s3 is not None and config.bucket:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou), _named_by_url(config):
            s3.create_bucket(Bucket=config.bucket)


# -- errors ----------------------------------------------------------------------

_UNAVAILABLE = {
    # S3's (payloads and results over offload_bytes): they were raised as they came,
    # so an enqueue answered 500, and a worker writing a big result lost the attempt.
    "InternalError",
    "SlowDown",
    "RequestTimeout",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
}


def not_created(table: str | None, create: bool = False) -> str:
    """What to do about a missing table: `spool db migrate` is Postgres's, not this store's.

    With create=1 already in the URL, naming it as the fix was wrong: it acts only when
    a process opens the store, so a table lost since (a restarted moto_server keeps
    nothing) comes back only with a new start."""
    named = f"the DynamoDB table {table!r}" if table else "the DynamoDB table"
    if create:
        return (
            f"{named} does not exist: create=1 makes it only when a process starts, and "
            "the endpoint has lost it since (deleted, or a restarted moto_server, which "
            "keeps nothing); "
            "start this process again to create it afresh (the jobs it held are gone)"
        )
    return (
        f"{named} does not exist: deploy it (infra/, docs/aws.md), or, offline "
        "(moto_server, DynamoDB Local), add create=1 to SPOOL_STORE_URL to create it"
    )


# What a process without AWS credentials is told (DynamoStore's first request met it).
NO_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE); "
    "against moto_server or DynamoDB Local (?endpoint=...) any values will do"
)


# Refusals: AWS answered that it did not do it (a throttle, a conflict with another
# transaction, S3's RequestTimeout for a body it never finished reading), whatever
# the status. Any other 5xx (InternalServerError, ServiceUnavailable, S3's
# InternalError) or TransactionInProgressException (a resend, same ClientRequestToken,
# met the first send still running) leaves a write's outcome unknown.
_REFUSALS = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "LimitExceededException",
    }
)


def _uncertain_code(code: str, status: int) -> bool:
    """An error answer after which a write may have been applied (see _REFUSALS)."""
    if code in _REFUSALS:
        return False
    return code == "TransactionInProgressException" or code.startswith("5") or status >= 500


# The requests that change the table. S3's PutObject is not one of them: a payload or
# result object is written before the record that names it, and one no record names
# is deleted again (dynamodb.py's _drop_unreferenced), so its lost answer leaves the
# job as it was.
TABLE_WRITES = frozenset(
    {"TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem"}
)
# Set in a call's botocore context by a try of a table write that was sent and whose
# answer was lost or a server error; carried to the error the call ends with.
SENT_UNANSWERED = "spool_sent_unanswered"


def _unanswered_try(
    request_dict: dict[str, Any],
    operation: Any,
    response: tuple[Any, dict[str, Any]] | None = None,
    caught_exception: BaseException | None = None,
    **_: Any,
) -> None:
    """botocore's needs-retry hook, after each try of a request (the last one too):
    marks a table write that reached AWS and got no answer it can trust. Botocore's
    own tries make the error a call ends with the last try's, and a write whose first
    try landed with its answer lost ended as EndpointConnectionError when the path to
    AWS then went down: "nothing was sent", with the job stored."""
    if getattr(operation, "name", None) not in TABLE_WRITES:
        return
    # Sent, then no whole answer: a read timeout, a connection closed or reset after
    # the request went out (HTTPClientError). Its ConnectionError kin
    # (EndpointConnectionError, ConnectTimeoutError, a proxy or TLS refusal) failed
    # before a byte of the request left: nothing was applied.
    unanswered = isinstance(caught_exception, HTTPClientError)
    if response is not None:
        http, parsed = response
        code = parsed.get("Error", {}).get("Code", "")
        unanswered = http.status_code >= 300 and _uncertain_code(code, http.status_code)
    if unanswered:
        request_dict.setdefault("context", {})[SENT_UNANSWERED] = True


def _carry_to_exception(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    """botocore's after-call-error hook: the call's BotoCoreError says whether one of
    its tries was sent unanswered (later calls of the same store method, a clean-up
    after the failure, do not overwrite it)."""
    if context.get(SENT_UNANSWERED):
        setattr(exception, SENT_UNANSWERED, True)


def _carry_to_answer(
    http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
) -> None:
    """botocore's after-call hook: an error answer (a ClientError to be) after a try
    sent unanswered says so in its response."""
    if http_response.status_code >= 300 and context.get(SENT_UNANSWERED):
        parsed[SENT_UNANSWERED] = True


def watch_unanswered(ddb: Any) -> None:
    """Have the store's DynamoDB client mark what a write's tries left unanswered
    (_unanswered_try), once per client however many stores share it."""
    events = ddb.meta.events
    events.register("needs-retry", _unanswered_try, unique_id="spool-unanswered-try")
    events.register("after-call-error", _carry_to_exception, unique_id="spool-unanswered-error")
    events.register("after-call", _carry_to_answer, unique_id="spool-unanswered-answer")


class NotTriedAgain(BotoCoreError):
    """A try botocore would have made again, refused because the process is stopping
    (Hurry). Not one of the errors botocore retries, so the call ends with it."""

    fmt = "the process is stopping, so the call was not tried again"


class Hurry:
    """A stopping process's store calls are not tried again (DynamoStore.hurry).

    boto3 makes each call up to 5 times (standard retries), each waiting up to
    read_timeout (20 s) for an answer: a `spool worker` told to stop while moto_server
    (or a network path) was frozen waited 120 s for its claim. Hurried, a call's first
    try still goes out (a finished job's result deserves it), but no second one."""

    def __init__(self) -> None:
        self.on = False

    def watch(self, client: Any) -> None:
        client.meta.events.register(
            "before-send", self._refuse_again, unique_id=f"spool-hurry-{id(self)}"
        )

    def _refuse_again(self, request: Any, **_: Any) -> None:
        if not self.on:
            return
        # botocore numbers each try in this header: "attempt=2; max=5".
        header = request.headers.get("amz-sdk-request", b"")
        text = header.decode() if isinstance(header, bytes) else str(header)
        found = re.search(r"attempt=(\d+)", text)
        if found is not None and int(found.group(1)) > 1:
            raise NotTriedAgain()


class _Calls(threading.local):
    """How many `aws_errors(write=True)` methods this thread is inside: a request
    such a method makes fails as part of that write."""

    writing = 0


_calls = _Calls()


def aws_errors(*, write: bool) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Map AWS failures to the store's errors, so the edge answers 503, not 500.

    `write` says whether the call may change the table: then a failure of one of its
    TABLE_WRITES that some try sent without getting an answer (a lost one, or a
    server error: _unanswered_try; any try, not only botocore's last) is
    UncertainWrite, as Postgres and Redis say a lost reply: the change may have been
    applied, the API's 503 tells the client to check or retry an enqueue with its
    key, the enqueue gate reads the jobs back to charge for those stored, and the
    worker's loops say what becomes of their jobs (store_outage.lost_write). It was
    a plain "AWS is unreachable: ConnectionClosedError", read as "nothing was
    stored". A read's failure, and a write's that never left this process, stay
    plain."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if write:
                _calls.writing += 1
            try:
                return method(*args, **kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException":
                    config = getattr(args[0], "config", None) if args else None
                    table = getattr(config, "table", None)
                    create = getattr(config, "create", False) is True
                    raise StoreNotMigrated(not_created(table, create), {"code": code}) from exc
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if code in _UNAVAILABLE or code.startswith("5") or status >= 500:
                    if (
                        _calls.writing
                        and exc.operation_name in TABLE_WRITES
                        and (_uncertain_code(code, status) or exc.response.get(SENT_UNANSWERED))
                    ):
                        raise UncertainWrite(f"DynamoDB answered {code}") from exc
                    service = "S3" if "Object" in exc.operation_name else "DynamoDB"
                    raise StoreUnavailable(f"{service} is unavailable: {code}") from exc
                raise
            except NoCredentialsError as exc:  # a setting to fix, not AWS being away
                raise StoreUnavailable(
                    f"the store (SPOOL_STORE_URL) cannot sign its AWS requests: {NO_CREDENTIALS}",
                    public="the job store cannot be reached; try again shortly",
                ) from exc
            except NotTriedAgain as exc:
                said = "the process is stopping, so AWS was not asked again after a try failed"
                if _calls.writing and getattr(exc, SENT_UNANSWERED, False):
                    raise UncertainWrite(said) from exc
                raise StoreUnavailable(f"{said}; nothing was applied") from exc
            except BotoCoreError as exc:
                name = type(exc).__name__
                if _calls.writing and getattr(exc, SENT_UNANSWERED, False):
                    raise UncertainWrite(
                        f"the connection to AWS failed before it answered ({name})"
                    ) from exc
                raise StoreUnavailable(f"AWS is unreachable: {name}") from exc
            finally:
                if write:
                    _calls.writing -= 1

        wrapper.aws_call = "write" if write else "read"  # type: ignore[attr-defined]
        return wrapper

    return decorate


def pages(call: Callable[..., Any], request: dict[str, Any]) -> Iterator[Any]:
    """Each answer of a paged Query or Scan (`call` is the client's query or scan),
    following LastEvaluatedKey until the last page."""
    while True:
        response = call(**request)
        yield response
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def counted(call: Callable[..., Any], request: dict[str, Any]) -> int:
    """The items a Query or Scan matches, counted by DynamoDB (Select=COUNT: none sent)."""
    return sum(int(page.get("Count", 0)) for page in pages(call, {**request, "Select": "COUNT"}))
