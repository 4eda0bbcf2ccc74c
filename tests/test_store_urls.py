"""Every store reads its URL strictly, as the Redis store did first: an option it does
not take (a typo: `durabilty=full` quietly ran `normal`), one given twice, or a bad
value is a ConfigError naming the option and what the store takes, so `spool` says it
in one line and exits 2, before any connection. Postgres URLs still carry libpq's own
parameters. Also the DynamoDB store's other URL-shaped surprises: a store without
`bucket=` reading a job whose payload is in S3, the fix a missing table names, and the
queue `create=1` makes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError
from chalicelib.errors import PayloadTooLarge, StoreNotMigrated
from chalicelib.models import Completion, Job, JobState
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import (
    MAX_RECEIVE_COUNT,
    URL_OPTIONS,
    VISIBILITY_TIMEOUT,
    DynamoConfig,
    create_resources,
    make_clients,
)
from chalicelib.storage.postgres import parse_url
from infra import generate  # what the deployed stacks get
from local.cli_errors import explain, line
from tests.factories import new_job, token
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
SPOOL = Path(sys.executable).with_name("spool")
PG = "postgresql://spool:hunter2@127.0.0.1:5432/test"


def refused(url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        open_store(url).close()
    message = str(caught.value)
    assert message.startswith("SPOOL_STORE_URL ") and "hunter2" not in message
    return message


# -- unknown options, in every store -----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named", "known"),
    [("durabilty=full", "'durabilty' (did you mean 'durability'?)", "durability, synchronous"),
     ("foo=1", "'foo'", "durability, synchronous")],
)  # fmt: skip
def test_sqlite_refuses_an_option_it_does_not_take(
    tmp_path: Path, query: str, named: str, known: str
) -> None:
    message = refused(f"sqlite:///{tmp_path}/spool.db?{query}")
    assert f"unknown option {named}" in message and f"takes {known}" in message
    assert not (tmp_path / "spool.db").exists()  # refused before anything was opened


def test_sqlite_refuses_an_option_given_twice(tmp_path: Path) -> None:
    message = refused(f"sqlite:///{tmp_path}/spool.db?durability=full&durability=normal")
    assert "'durability' is given more than once" in message


def test_sqlite_still_takes_its_options_and_an_empty_one(tmp_path: Path) -> None:
    for query in ("durability=full", "synchronous=full", "durability="):
        open_store(f"sqlite:///{tmp_path}/spool.db?{query}").close()


def test_the_memory_store_takes_no_options() -> None:
    message = refused("memory://?x=1")
    assert "unknown option 'x'" in message and "takes no options" in message
    open_store("memory://").close()


@pytest.mark.parametrize(
    ("query", "said"),
    [("shcema=x", "unknown option 'shcema' (did you mean 'schema'?)"),
     ("bogus=1", "unknown option 'bogus'"),
     ("sslmod=require", "unknown option 'sslmod' (did you mean 'sslmode'?)"),
     ("pool_max=x", "pool_max must be a whole number, not 'x'"),
     ("pool_min=1.5", "pool_min must be a whole number, not '1.5'"),
     ("pool_timeout=soon", "pool_timeout must be a number of seconds, not 'soon'"),
     ("pool_timeout=0", "pool_timeout must be a number of seconds above 0"),
     ("schema=a&schema=b", "'schema' is given more than once")],
)  # fmt: skip
def test_postgres_refuses_what_neither_spool_nor_libpq_reads(query: str, said: str) -> None:
    message = refused(f"{PG}?{query}")  # no connection is made: no server needed
    assert said in message
    if "unknown option" in said:
        assert "takes schema, pool_min, pool_max, pool_timeout, durability" in message
        assert "libpq" in message and "sslmode" in message


def test_postgres_passes_libpq_parameters_on() -> None:
    settings = parse_url(
        f"{PG}?schema=jobs&sslmode=disable&connect_timeout=3&application_name=me"
        "&options=-c%20work_mem%3D4MB&pool_max=4"
    )
    assert settings.schema == "jobs" and settings.pool_max == 4
    for kept in ("sslmode=disable", "connect_timeout=3", "application_name=me", "work_mem"):
        assert kept in settings.conninfo


def test_postgres_connections_give_up_on_a_server_that_stopped_answering() -> None:
    """Without keepalives and a TCP user timeout a worker waited on a dead server's
    socket, saying nothing, for as long as the kernel retransmitted."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(parse_url(f"{PG}?schema=jobs").conninfo)
    assert {k: given[k] for k in ("keepalives", "keepalives_idle", "tcp_user_timeout")} == {
        "keepalives": "1",
        "keepalives_idle": "30",
        "tcp_user_timeout": "60000",
    }
    own = conninfo_to_dict(parse_url(f"{PG}?keepalives_idle=5&tcp_user_timeout=0").conninfo)
    assert (own["keepalives_idle"], own["tcp_user_timeout"]) == ("5", "0")


def test_postgres_hides_what_libpq_could_not_read() -> None:
    """libpq quotes the token it could not decode, which may be the password."""
    with pytest.raises(ConfigError) as caught:
        parse_url("postgresql://spool:hun%zzter2@127.0.0.1/test")
    assert "invalid percent-encoded token" in str(caught.value)
    assert "hun" not in str(caught.value)


@pytest.mark.parametrize(
    ("query", "said"),
    [("shard=2", "unknown option 'shard' (did you mean 'shards'?)"),
     ("buckett=b", "unknown option 'buckett' (did you mean 'bucket'?)"),
     ("shards=two", "shards must be a whole number of at least 1, not 'two'"),
     ("shards=0", "shards must be a whole number of at least 1, not '0'"),
     ("lost_after=soon", "lost_after must be a number of at least 0, not 'soon'"),
     ("retention_days=nan", "retention_days must be a number of at least 0, not 'nan'"),
     ("reap_every=-1", "reap_every must be a number of at least 0, not '-1'"),
     ("create=ture", "create must be 1 or 0 (true or false), not 'ture'"),
     ("queue=a&queue=b", "'queue' is given more than once")],
)  # fmt: skip
def test_dynamodb_refuses_unknown_options_and_bad_values(query: str, said: str) -> None:
    message = refused(f"dynamodb://jobs?{query}")
    assert said in message
    if "unknown option" in said:
        assert f"takes {', '.join(URL_OPTIONS)}" in message


def test_dynamodb_reads_every_option_it_lists() -> None:
    config = DynamoConfig.from_url(
        "dynamodb://t?queue=q&bucket=b&endpoint=http://127.0.0.1:5000&region=eu-west-1"
        "&shards=2&counter_shards=3&offload_bytes=1000&retention_days=7&reap_every=30"
        "&lost_after=60&create=true"
    )
    assert (config.queue, config.bucket, config.region, config.shards) == ("q", "b", "eu-west-1", 2)
    assert (config.counter_shards, config.offload_bytes, config.retention_days) == (3, 1000, 7.0)
    assert (config.reap_every, config.lost_after, config.create) == (30.0, 60.0, True)


# -- as `spool` says it ------------------------------------------------------------------


def spool(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOOL), *argv], cwd=ROOT, env=guarded_env(**env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "url"),
    [(["jobs"], f"{PG}?shcema=x"),
     (["worker", "--burst"], f"{PG}?shcema=x"),
     (["serve", "--port", "0"], f"{PG}?shcema=x"),
     (["db", "status"], f"{PG}?schema=x&bogus=1"),
     (["jobs"], f"{PG}?pool_max=x"),
     (["jobs"], "memory://?x=1")],
)  # fmt: skip
def test_spool_says_a_bad_option_in_one_line_and_exits_2(argv: list[str], url: str) -> None:
    done = spool(*argv, SPOOL_STORE_URL=url)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    option = url.rsplit("?", 1)[1].rsplit("&", 1)[-1].split("=")[0]
    assert lines[0].startswith("spool: ") and option in lines[0]
    assert "unexpected error" not in lines[0] and "Postgres is running" not in lines[0]
    assert "hunter2" not in done.stderr


def test_spool_db_names_a_bad_option_given_with_url() -> None:
    done = spool("db", "--url", f"{PG}?schema=x&bogus=1", "status")
    assert done.returncode == 2, done.stderr
    assert "unknown option 'bogus'" in done.stderr and "running" not in done.stderr


# -- DynamoDB: a store without bucket= ---------------------------------------------------

BIG = {"blob": "x" * 150_000}  # over offload_bytes: in S3 when there is a bucket


def job_of(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


def test_without_a_bucket_a_150_kb_payload_stays_in_the_record(
    moto: None, clock: FakeClock
) -> None:
    store = open_store("dynamodb://jobs?queue=jobs&create=1", clock)
    try:
        job_id = store.add([new_job(clock, payload=BIG)])[0].job.id
        job = store.get(job_id)
        assert job is not None and job.payload == BIG
    finally:
        store.close()


def test_without_a_bucket_a_payload_too_big_for_a_record_is_refused_naming_bucket(
    moto: None, clock: FakeClock
) -> None:
    store = open_store("dynamodb://jobs?queue=jobs&create=1", clock)
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            store.add([new_job(clock, payload={"blob": "x" * 320_000})])
        assert caught.value.status == 413 and "bucket=" in caught.value.message
    finally:
        store.close()


def test_a_store_without_bucket_shows_s3_values_as_unreadable_never_empty(
    moto: None, clock: FakeClock
) -> None:
    """Before: a job whose payload another store (with bucket=) kept in S3 read as
    payload {} and result null, and a worker ran its handler on {}."""
    writer = open_store("dynamodb://jobs?queue=jobs&bucket=jobs-bucket&create=1", clock)
    reader = open_store("dynamodb://jobs?queue=jobs", clock)
    assert isinstance(reader, DynamoStore) and reader.blobs is None
    try:
        job_id = writer.add([new_job(clock, payload=BIG)])[0].job.id
        key = f"spool/payloads/{job_id}.json"
        payload: Any = job_of(reader, job_id).payload
        assert payload["error"] == "payload_unreadable" and payload["object"] == key
        assert "bucket=" in payload["message"]

        assert reader.claim(1, 60) == []  # not run on a marker: retried with a backoff
        job = job_of(reader, job_id)
        assert job.state is JobState.RETRYING
        assert job.last_error is not None and "bucket=" in job.last_error

        clock.advance(3600)  # the writer, with the bucket, runs it and keeps its result in S3
        claimed = writer.claim(1, 60)
        assert [c.payload for c in claimed] == [BIG]
        done = Completion(job_id, token(claimed[0]), JobState.SUCCEEDED, BIG)
        assert writer.finish([done]) == [True]
        assert job_of(writer, job_id).result == BIG
        result: Any = job_of(reader, job_id).result
        assert result["error"] == "result_unreadable" and "bucket=" in result["message"]
    finally:
        writer.close()
        reader.close()


# -- DynamoDB: a missing table, and what create=1 makes -----------------------------------


def test_a_missing_table_names_the_dynamodb_fix_not_spool_db_migrate(
    moto: None, clock: FakeClock
) -> None:
    store = open_store("dynamodb://no-such-table?queue=q", clock)
    try:
        with pytest.raises(StoreNotMigrated) as caught:
            store.get("j_" + "0" * 32)
    finally:
        store.close()
    failure = explain(caught.value)
    said = line(failure.problem, failure.fix)
    assert "'no-such-table' does not exist" in said
    assert "infra/" in said and "create=1" in said
    assert "migrate" not in said  # `spool db migrate` does nothing for DynamoDB


def test_create_makes_the_queue_infra_deploys(moto: None) -> None:
    config = DynamoConfig.from_url("dynamodb://jobs?queue=jobs&bucket=jobs-bucket")
    ddb, sqs, s3 = make_clients(config)
    create_resources(config, ddb, sqs, s3)
    url = sqs.get_queue_url(QueueName="jobs")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])

    chalice = json.loads((ROOT / ".chalice" / "config.json").read_text())
    deployed = generate.visibility_for(generate.worker_timeout(chalice))
    resources = json.loads((ROOT / "infra" / "resources.json").read_text())["Resources"]
    queue = resources["JobsQueue"]["Properties"]
    assert MAX_RECEIVE_COUNT == generate.MAX_RECEIVE_COUNT == 4
    assert VISIBILITY_TIMEOUT == deployed == queue["VisibilityTimeout"] == 480
    assert redrive["maxReceiveCount"] == queue["RedrivePolicy"]["maxReceiveCount"] == 4
    assert int(attrs["VisibilityTimeout"]) == 480
    assert redrive["deadLetterTargetArn"].endswith(":jobs-dlq")


def test_two_processes_creating_at_once_both_open(moto: None) -> None:
    """docs/aws.md starts `spool serve` and the poller together, both with create=1."""
    config = DynamoConfig.from_url("dynamodb://jobs?queue=jobs")
    ddb, sqs, _ = make_clients(config)
    real = ddb.describe_table

    def not_yet(**kwargs: object) -> object:
        ddb.describe_table = real  # type: ignore[method-assign]
        create_resources(config, ddb, sqs)  # the other process wins the race
        raise ddb.exceptions.ResourceNotFoundException(
            {"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "DescribeTable"
        )

    ddb.describe_table = not_yet  # type: ignore[method-assign,assignment]
    create_resources(config, ddb, sqs)  # met ResourceInUseException: waited, not raised
    assert real(TableName="jobs")["Table"]["TableStatus"] == "ACTIVE"
