"""Write the AWS infrastructure files from one description.

    .venv/bin/python infra/generate.py          # rewrite the files
    .venv/bin/python infra/generate.py --check  # exit 1 if any file is stale

Outputs (all checked in, all reviewed as JSON):

- infra/resources.json: what `chalice package --merge-template` adds to
  Chalice's SAM template: the jobs table, the queue and its dead-letter queue,
  the payload bucket, each function's role policy scoped to those resources
  and to its own log group, the functions' store settings, the API keys'
  SSM parameter, ReportBatchItemFailures, a batching window and a concurrency
  cap on the SQS event source, log groups with a retention, the API stage's throttling
  and access log, API Gateway's own refusals in the app's error shape, and alarms
  on the dead-letter queue, the dead jobs (a metric filter on the workers' logs)
  and each function's errors.
  Deploy-time choices are stack parameters (PARAMETERS).
  infra/finalize.py then sets what depends on the build: runtime, architecture,
  the stage's parameter name.
- infra/data-stack.json: the same table, queues and bucket (and the log groups
  and alarms of `chalice deploy`'s function names) as a stack of their own, with names
  fixed by stage, for `chalice deploy` (which cannot create them).
- .chalice/policy-<stage>-<role>.json: the role policies `chalice deploy`
  attaches (autogen_policy is off), scoped to the data stack's names in the
  caller's own account (${aws:PrincipalAccount}: a policy file cannot hold
  the account id, and must not match another account's bucket).

Why generate: the table's indexes come from the code that queries them
(chalicelib/storage/dynamodb_schema.py), and one list of actions per role feeds
both the template and the policy files, so none of them can drift apart.
tests/test_infra.py runs the --check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.storage.dynamodb_schema import table_definition  # noqa: E402

STAGES = ("dev", "prod")
# The SQS event source gathers messages for up to BATCH_WINDOW seconds before it
# invokes the worker (MaximumBatchingWindowInSeconds), unless its batch of 10 fills
# first: under light load a job may start that much later, and one invocation then
# claims, finishes and deletes several jobs with one request each instead of one
# per job (bench/aws_requests.py, docs/aws.md "Requests per job"). Under load the
# batch fills at once and the window costs nothing.
BATCH_WINDOW = 5
# A message that keeps failing (names no job, or kills its container) must reach
# the SQS dead-letter queue within POISON_SECONDS. Each delivery hides it for the
# visibility timeout V from when the poller receives it, which is up to the window W
# before the invocation starts; one whose container hangs until the Lambda timeout
# T (the heartbeat extending it meanwhile) hides it for at most W + T + V, so
#   MAX_RECEIVE_COUNT x (W + T + V) <= POISON_SECONDS, with V >= T,
# i.e. 4 x (5 + 240 + 480) = 2900 s at the worker timeout .chalice/config.json sets.
# (Five receives would need T <= 238 s with a window.) AWS's 6x advice for V covers
# retries of a throttled function; the event source's MaximumConcurrency (equal to
# the reserved concurrency) keeps it from throttling.
VISIBILITY_FACTOR = 2
MAX_RECEIVE_COUNT = 4
POISON_SECONDS = 3600
# Days a finished job is kept (the store URL's retention_days=, the table's TTL): a
# stack parameter, so that the bucket's lifecycle rules follow it. CloudFormation
# cannot add, so each allowed value maps to its rules (RETENTION_MAP): a result
# object (written when its job finishes) is kept a day longer than its record, a
# payload object (written at enqueue) a year and a day longer, since a job may wait
# up to 366 days (chalicelib/timebounds.py) before it runs.
RETENTION_DAYS = 30  # the store's default
RETENTION_CHOICES_DAYS = [1, 3, 7, 14, 30, 60, 90, 180, 365]
STORE_OPTIONS = "reap_every=30"


def result_days(retention: int) -> int:
    """A result object outlives its record (finish + retention) by a day."""
    return retention + 1


def payload_days(retention: int) -> int:
    """A payload object outlives a record that waited the longest before it ran."""
    return 366 + retention + 1


RETENTION_MAP = {
    str(days): {"ResultDays": result_days(days), "PayloadDays": payload_days(days)}
    for days in RETENTION_CHOICES_DAYS
}
RETENTION = {
    "Type": "Number",
    "Default": RETENTION_DAYS,
    "AllowedValues": RETENTION_CHOICES_DAYS,
    "Description": "Days a finished job (and its idempotency key, result and payload) is "
    "kept: the store URL's retention_days and the bucket's lifecycle rules",
}


def _lifecycle_days(which: str) -> dict[str, Any]:
    return {"Fn::FindInMap": ["RetentionRules", {"Ref": "RetentionDays"}, which]}


# app.py function -> (its logical id in Chalice's template, its role's logical id, role name)
FUNCTIONS = {
    "api_handler": ("APIHandler", "ApiHandlerRole", "api"),
    "run_jobs": ("RunJobs", "RunJobsRole", "worker"),
    "drain_due": ("DrainDue", "DrainDueRole", "scheduler"),
}
SQS_EVENT = ("RunJobs", "RunJobsSqsEventSource")

# What each role may do, by resource. No wildcard actions; every resource is
# one table (and its indexes), one queue, or one bucket's spool/ prefix.
ACTIONS: dict[str, dict[str, list[str]]] = {
    "api": {
        "table": [
            "dynamodb:BatchGetItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:UpdateItem",
        ],
        # GetQueueAttributes: /health's probe of a queue that lost a send, which clears
        # the failure once the queue answers (SqsDispatch.still_failing). Without it,
        # every /health after a lost send was refused and answered 503 for a minute
        # with SQS long back (tests/test_attack_s62D_health_probe.py).
        "queue": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
    },
    "worker": {
        "table": [
            "dynamodb:BatchGetItem",
            # A finish or a reap that ends a job with a callback_url writes its webhook
            # delivery (a Put) in the same transaction, and deletes there the job's
            # oldest finished deliveries beyond SPOOL_WEBHOOK_HISTORY (Deletes): the
            # 26th death of a redriven job was refused without DeleteItem
            # (tests/test_iam_actions.py).
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            # No Scan: only the API's /metrics and all-tenant overview scan
            # (DynamoStore.counts); tests/test_iam_actions.py checks each grant is used.
            "dynamodb:UpdateItem",
        ],
        "queue": [
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "sqs:ReceiveMessage",
            "sqs:SendMessage",
        ],
        # No DeleteObject: the worker reads payloads and writes results, and never
        # deletes (only an enqueue's rollback and the dashboard's purge do: the API's
        # and a periodic tick's). It runs tenants' handlers on tenants' input, so code
        # run there through a flaw could have deleted every job's objects
        # (tests/test_attack_s62D_unused_grants.py).
        "objects": ["s3:GetObject", "s3:PutObject"],
    },
    "scheduler": {
        "table": [
            "dynamodb:BatchGetItem",
            "dynamodb:DeleteItem",
            # No GetItem: its one use, a webhook delivery reading its job, is a Query
            # filtered on the tenant (DynamoStore._owned_item).
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",  # no Scan either, as the worker's
        ],
        # GetQueueAttributes: the release asks the queue's depth before presuming
        # messages lost (DynamoStore._presumed_lost).
        "queue": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
    },
}
# On the bucket itself, for every role that reads its objects: without it S3 answers a
# GetObject of a key that is gone (the lifecycle rule, an operator) with AccessDenied,
# not NoSuchKey, and the worker retries the job to its last attempt instead of burying
# it at once as payload_missing (chalicelib/storage/dynamodb.py). No role lists keys.
BUCKET_ACTIONS = ["s3:ListBucket"]
# Into the function's own log group, which the stack creates with its retention:
# no logs:CreateLogGroup, so Lambda cannot make one that keeps logs forever.
LOG_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]
# The API function reads the tenant keys (chalicelib/api/key_source.py).
KEY_ACTIONS = ["ssm:GetParameter"]
DECRYPT_ACTIONS = ["kms:Decrypt"]
KEY_ROLES = ("api",)
# Handlers' files (resize_image's sources and outputs: chalicelib/blobs.py) live in the
# payload bucket under BLOB_PREFIX/, a folder apart from Spool's own spool/ (blobs.py
# refuses an overlap). Only the worker runs handlers, so only its role may read and
# write there (no delete: no handler deletes). Without it the Lambda zip shipped Pillow
# for a resize_image that could reach no file: the worker opened .spool/blobs under
# /var/task, and every such job went dead (tests/test_newuser_s50g_aws_blobs.py).
# The worker reads the SMTP password from an SSM SecureString (chalicelib/secret_parameters.py,
# SPOOL_SMTP_PASSWORD_PARAMETER), not from its environment, where anyone who may read the
# function's configuration read it. Only the worker sends mail; the API's admit of a
# send_email job never needs the password.
SMTP_ROLES = ("worker",)
# The tenants' webhook signing secrets the same way (SPOOL_WEBHOOKS_PARAMETER,
# chalicelib/webhooks/source.py): the API reads them to check a tenant's webhook at
# enqueue, the scheduled function to sign deliveries (and to enqueue periodic jobs);
# the SQS worker only writes a finished job's delivery to the outbox, which needs none.
WEBHOOK_ROLES = ("api", "scheduler")
BLOB_PREFIX = "blobs"
BLOB_ACTIONS = ["s3:GetObject", "s3:PutObject"]
BLOB_ROLES = ("worker",)


def api_keys_parameter(stage: str) -> str:
    """The SSM parameter holding a stage's API keys (SPOOL_API_KEYS_PARAMETER)."""
    return f"/spool/{stage}/api-keys"


def smtp_password_parameter(stage: str) -> str:
    """The SSM parameter a `chalice deploy` stage's worker may read the SMTP password from."""
    return f"/spool/{stage}/smtp-password"


def webhooks_parameter(stage: str) -> str:
    """The SSM parameter a `chalice deploy` stage may keep SPOOL_WEBHOOKS in."""
    return f"/spool/{stage}/webhooks"


def chalice_function_name(stage: str, function: str) -> str:
    """What `chalice deploy` names a function: spool-<stage> for the API."""
    return f"spool-{stage}" if function == "api_handler" else f"spool-{stage}-{function}"


def worker_timeout(config: dict[str, Any]) -> int:
    """The longest run_jobs timeout any stage sets (Lambda's default is 60 s)."""
    timeouts = [
        int(stage.get("lambda_functions", {}).get("run_jobs", {}).get("lambda_timeout", 60))
        for stage in config.get("stages", {}).values()
    ]
    return max([int(config.get("lambda_timeout", 60)), *timeouts])


def visibility_for(timeout: int, window: int = BATCH_WINDOW) -> int:
    """The queue's visibility timeout for this worker timeout; refuses a timeout too
    long for a poison message to reach the dead-letter queue within the hour."""
    visibility = VISIBILITY_FACTOR * timeout
    worst = MAX_RECEIVE_COUNT * (window + timeout + visibility)
    if worst > POISON_SECONDS:
        longest = (POISON_SECONDS // MAX_RECEIVE_COUNT - window) // (1 + VISIBILITY_FACTOR)
        raise SystemExit(
            f"run_jobs' lambda_timeout {timeout} s in .chalice/config.json lets a poison "
            f"message circulate {worst} s before the dead-letter queue (max "
            f"{POISON_SECONDS}): keep it at or under {longest} s"
        )
    return visibility


def _statements(role: str, arns: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = [
        {
            "Sid": kind.capitalize(),
            "Effect": "Allow",
            "Action": actions,
            "Resource": arns[kind],
        }
        for kind, actions in ACTIONS[role].items()
    ]
    objects = statements[-1]
    assert objects["Sid"] == "Objects"
    bucket = {"Sid": "Bucket", "Effect": "Allow", "Action": BUCKET_ACTIONS,
              "Resource": arns["bucket"]}  # fmt: skip
    if "objects_condition" in arns:
        objects["Condition"] = bucket["Condition"] = arns["objects_condition"]
    statements.append(bucket)
    if role in BLOB_ROLES:
        blobs = {"Sid": "Blobs", "Effect": "Allow", "Action": BLOB_ACTIONS,
                 "Resource": arns["blobs"]}  # fmt: skip
        if "objects_condition" in arns:
            blobs["Condition"] = arns["objects_condition"]
        statements.append(blobs)
    statements.append(
        {"Sid": "Logs", "Effect": "Allow", "Action": LOG_ACTIONS, "Resource": arns["logs"][role]}
    )
    if role in SMTP_ROLES:
        statements += _parameter_grant("SmtpPassword", arns, "smtp_password")
    if role in WEBHOOK_ROLES:
        statements += _parameter_grant("Webhooks", arns, "webhooks")
    if role in KEY_ROLES:
        statements += _parameter_grant("ApiKeys", arns, "api_keys")
    return statements


def _ref_if(condition: str, name: str) -> dict[str, Any]:
    """`name`'s value where the stack's `condition` holds; the property left out elsewhere."""
    return {"Fn::If": [condition, {"Ref": name}, {"Ref": "AWS::NoValue"}]}


def _parameter_grant(sid: str, arns: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """ssm:GetParameter on one SecureString parameter, and kms:Decrypt of its value
    only when SSM asks, for that parameter (the encryption context names it)."""
    return [
        {"Sid": sid, "Effect": "Allow", "Action": KEY_ACTIONS, "Resource": arns[name]},
        {"Sid": f"{sid}Decrypt", "Effect": "Allow", "Action": DECRYPT_ACTIONS,
         "Resource": arns[f"{name}_key"], "Condition": arns[f"{name}_decrypt"]},
    ]  # fmt: skip


# -- the data resources (shared by both templates) -------------------------------------


def _table(name: Any = None) -> dict[str, Any]:
    spec = table_definition("unused")
    properties: dict[str, Any] = {
        "BillingMode": spec["BillingMode"],
        "AttributeDefinitions": spec["AttributeDefinitions"],
        "KeySchema": spec["KeySchema"],
        "GlobalSecondaryIndexes": spec["GlobalSecondaryIndexes"],
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        # DeleteTable is refused (by hand, a script, another stack's mistake) until
        # someone turns this off on purpose: docs/aws.md, "Deleting the data".
        "DeletionProtectionEnabled": True,
    }
    if name is not None:
        properties = {"TableName": name, **properties}
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def _tls_only(action: str, resources: list[Any]) -> dict[str, Any]:
    """A resource policy that refuses every request not made over TLS, and grants
    nothing (each role's own statements do). A deny narrows access, so the service's
    every action (`sqs:*`, `s3:*`) is the point here, not a wide grant."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": action,
                "Resource": resources,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _queues(visibility: int, name: Any = None, dlq_name: Any = None) -> dict[str, Any]:
    dlq: dict[str, Any] = {
        "MessageRetentionPeriod": 14 * 86400,
        "SqsManagedSseEnabled": True,
    }
    queue: dict[str, Any] = {
        "VisibilityTimeout": visibility,
        "MessageRetentionPeriod": 4 * 86400,
        "ReceiveMessageWaitTimeSeconds": 20,
        "SqsManagedSseEnabled": True,
        "RedrivePolicy": {
            "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
            "maxReceiveCount": MAX_RECEIVE_COUNT,
        },
    }
    if name is not None:
        queue = {"QueueName": name, **queue}
        dlq = {"QueueName": dlq_name, **dlq}
    # Kept when the stack goes, as the table and bucket are: a queue holds ids of
    # jobs still waiting, and the dead-letter queue what a person has yet to read.
    kept = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    queues = ("JobsQueue", "JobsDeadLetterQueue")
    return {
        "JobsDeadLetterQueue": {"Type": "AWS::SQS::Queue", **kept, "Properties": dlq},
        "JobsQueue": {"Type": "AWS::SQS::Queue", **kept, "Properties": queue},
        # Without it SQS answers plain http:// too (message bodies and receipt handles in
        # clear). It grants nothing: each role's own statements do. Kept with the queues,
        # as the bucket's policy is with the bucket.
        "JobsQueuesPolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            **kept,
            "Properties": {
                "Queues": [{"Ref": q} for q in queues],
                "PolicyDocument": _tls_only("sqs:*", [{"Fn::GetAtt": [q, "Arn"]} for q in queues]),
            },
        },
    }


def _bucket(name: Any = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        },
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {
            "Rules": [
                {
                    # Safety net for objects a crash left without a record.
                    "Id": "results",
                    "Status": "Enabled",
                    "Prefix": "spool/results/",
                    "ExpirationInDays": _lifecycle_days("ResultDays"),
                },
                {
                    "Id": "payloads",
                    "Status": "Enabled",
                    "Prefix": "spool/payloads/",
                    "ExpirationInDays": _lifecycle_days("PayloadDays"),
                },
                {
                    "Id": "uploads",
                    "Status": "Enabled",
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                },
            ]
        },
    }
    if name is not None:
        properties = {"BucketName": name, **properties}
    return {
        "PayloadBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": properties,
        },
        "PayloadBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            # Kept with the bucket: deleted with the stack, it left the kept bucket (every
            # tenant's offloaded payloads) answering plain HTTP.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Bucket": {"Ref": "PayloadBucket"},
                "PolicyDocument": _tls_only(
                    "s3:*",
                    [
                        {"Fn::GetAtt": ["PayloadBucket", "Arn"]},
                        {"Fn::Sub": "${PayloadBucket.Arn}/*"},
                    ],
                ),
            },
        },
    }


def _data_resources(visibility: int, names: dict[str, Any] | None = None) -> dict[str, Any]:
    names = names or {}
    return {
        "JobsTable": _table(names.get("table")),
        **_queues(visibility, names.get("queue"), names.get("dlq")),
        **_bucket(names.get("bucket")),
    }


STORE_URL = {
    "Fn::Sub": "dynamodb://${JobsTable}?queue=${JobsQueue}&bucket=${PayloadBucket}&"
    + STORE_OPTIONS
    + "&retention_days=${RetentionDays}"  # the parameter the lifecycle rules follow
}

OUTPUTS = {
    "JobsTableName": {"Value": {"Ref": "JobsTable"}},
    "JobsQueueUrl": {"Value": {"Ref": "JobsQueue"}},
    "JobsDeadLetterQueueUrl": {"Value": {"Ref": "JobsDeadLetterQueue"}},
    "PayloadBucketName": {"Value": {"Ref": "PayloadBucket"}},
    "StoreUrl": {"Value": STORE_URL},
}

# CloudWatch Logs accepts only these retention periods.
RETENTION_CHOICES = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                     1827, 2192, 2557, 2922, 3288, 3653]  # fmt: skip
LOG_RETENTION = {
    "Type": "Number",
    "Default": 30,
    "AllowedValues": RETENTION_CHOICES,
    "Description": "Days CloudWatch keeps the functions' logs and the API's access log",
}


def _log_group(name: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {"LogGroupName": name, "RetentionInDays": {"Ref": "LogRetentionDays"}},
    }


# -- alarms (both templates) ------------------------------------------------------------

# Where the alarms say so: an SNS topic of the operator's (email, chat, a pager behind
# it). Empty: the alarms still change state in the console, and notify nobody.
ALARM_TOPIC = {
    "Type": "String",
    "Default": "",
    "Description": "ARN of an SNS topic the alarms notify (dead letters, dead jobs, "
    "function errors); empty: none",
}
ALARM_CONDITIONS = {
    "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]},
}
ALARM_PERIOD = 300
# The functions that bury jobs (a worker's `dead` line, or the store's for a job a
# claim's reap buried): run_jobs and drain_due; the API never buries one.
BURYING = ("run_jobs", "drain_due")
# Lambda writes JSON lines (SPOOL_LOG_FORMAT's default there, chalicelib/logs.py): a
# job event's name is the line's top-level `event`.
DEAD_PATTERN = '{ $.event = "dead" }'
DEAD_METRIC = "JobsDead"


def _alarm(description: str, metric: dict[str, Any], statistic: str = "Sum") -> dict[str, Any]:
    """An alarm that fires on the first one seen in a period (a message, a dead job, an
    error) and reads no data as all clear (a quiet queue is a healthy one)."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            **metric,
            "Statistic": statistic,
            "Period": ALARM_PERIOD,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_ref_if("HasAlarmTopic", "AlarmTopicArn")],
        },
    }


def _alarms(function_names: dict[str, Any]) -> dict[str, Any]:
    """The dead-letter queue, the dead jobs in the table and each function's errors.

    `function_names`: each function's (chalice's name) FunctionName as the template
    knows it. The roles gain nothing: CloudWatch reads its own metrics and Logs
    counts lines it already holds."""
    namespace = {"Fn::Sub": "Spool/${AWS::StackName}"}
    out: dict[str, Any] = {
        "DeadLetterQueueAlarm": _alarm(
            "A message reached the jobs' SQS dead-letter queue: its delivery kept "
            "failing. The job is still in the table and is sent again (docs/aws.md, "
            "Poison messages); look at run_jobs' errors",
            {
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [
                    {
                        "Name": "QueueName",
                        "Value": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]},
                    }
                ],
            },
            statistic="Maximum",
        ),
        "DeadJobsAlarm": _alarm(
            "A job went to the dead letters (state dead in the table): `spool dlq list` "
            "or GET /dlq lists them with their last error",
            {"Namespace": namespace, "MetricName": DEAD_METRIC},
        ),
    }
    for function in BURYING:
        logical_id = FUNCTIONS[function][0]
        out[f"{logical_id}DeadJobsFilter"] = {
            "Type": "AWS::Logs::MetricFilter",
            "Properties": {
                "LogGroupName": {"Ref": f"{logical_id}LogGroup"},
                "FilterPattern": DEAD_PATTERN,
                "MetricTransformations": [
                    {
                        "MetricNamespace": namespace,
                        "MetricName": DEAD_METRIC,
                        "MetricValue": "1",
                        "Unit": "Count",
                    }
                ],
            },
        }
    for function, (logical_id, _, _) in FUNCTIONS.items():
        out[f"{logical_id}ErrorsAlarm"] = _alarm(
            f"{function} failed (an invocation raised or timed out)",
            {
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": function_names[function]}],
            },
        )
    return out


# -- the three outputs ------------------------------------------------------------------

# Deploy-time choices: `aws cloudformation deploy --parameter-overrides Name=value`.
PARAMETERS: dict[str, Any] = {
    "ApiKeysParameter": {
        "Type": "String",
        # infra/finalize.py sets the default to /spool/<stage>/api-keys.
        "AllowedPattern": "^/[A-Za-z0-9_./-]+$",
        "Description": "SSM SecureString parameter holding the API keys (sha256:<hex>=tenant,...)",
    },
    "ApiKeysKmsKeyArn": {
        "Type": "String",
        "Default": "",
        # The Resource of the API role's kms:Decrypt: an alias (ARN or not) or a bare key
        # id there never matches, and the API answered 503 keys_unavailable for good.
        "AllowedPattern": "^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+)?$",
        "ConstraintDescription": "a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an "
        "alias or a bare key id; empty for the aws/ssm key",
        "Description": "ARN of the KMS key encrypting that parameter; empty: the default "
        "key, aws/ssm",
    },
    "SmtpPasswordParameter": {
        "Type": "String",
        "Default": "",
        # A name, not an ARN: the grant and the encryption context are built from it.
        "AllowedPattern": "^(/[A-Za-z0-9_./-]+)?$",
        "Description": "SSM SecureString parameter holding send_email's SMTP password "
        "(SPOOL_SMTP_PASSWORD_PARAMETER, read by the worker only); empty: none",
    },
    "WebhooksParameter": {
        "Type": "String",
        "Default": "",
        # A name, not an ARN: the grant and the encryption context are built from it.
        "AllowedPattern": "^(/[A-Za-z0-9_./-]+)?$",
        "Description": "SSM SecureString parameter holding SPOOL_WEBHOOKS, the tenants' "
        "webhook URLs and signing secrets (SPOOL_WEBHOOKS_PARAMETER, read by the API and "
        "the scheduled function); empty: none",
    },
    "ApiThrottleRateLimit": {
        "Type": "Number",
        "Default": 100,
        "MinValue": 1,
        "Description": "Steady requests per second the API stage accepts (beyond: 429)",
    },
    "ApiThrottleBurstLimit": {
        "Type": "Number",
        "Default": 200,
        "MinValue": 1,
        "Description": "Requests the API stage accepts in a burst above the rate",
    },
    "LogRetentionDays": LOG_RETENTION,
    "RetentionDays": RETENTION,
    "AlarmTopicArn": ALARM_TOPIC,
    "WorkerConcurrency": {
        "Type": "Number",
        "Default": 8,
        "MinValue": 2,
        "MaxValue": 1000,
        "Description": "Most worker invocations at once (each runs SPOOL_CONCURRENCY jobs): "
        "the cap that protects a database or an SMTP relay",
    },
    "ReserveWorkerConcurrency": {
        "Type": "String",
        "Default": "true",
        "AllowedValues": ["true", "false"],
        "Description": "Reserve WorkerConcurrency for the worker; false where the account's "
        "concurrency quota is too small to reserve any (the cap still holds)",
    },
}
CONDITIONS = {
    **ALARM_CONDITIONS,
    "HasApiKeysKmsKey": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiKeysKmsKeyArn"}, ""]}]},
    "HasSmtpPasswordParameter": {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SmtpPasswordParameter"}, ""]}]
    },
    "HasWebhooksParameter": {"Fn::Not": [{"Fn::Equals": [{"Ref": "WebhooksParameter"}, ""]}]},
    "ReservesWorkerConcurrency": {"Fn::Equals": [{"Ref": "ReserveWorkerConcurrency"}, "true"]},
}
PARAMETER_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
    ":parameter${ApiKeysParameter}"
}
# Without SmtpPasswordParameter this is `...:parameter` (no name), which names no
# parameter: the worker's grant then reaches nothing (a statement under Fn::If would
# leave every reader of the policy a statement that is not one).
SMTP_PARAMETER_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
    ":parameter${SmtpPasswordParameter}"
}
# The same for WebhooksParameter: without it the grant reaches nothing.
WEBHOOKS_PARAMETER_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
    ":parameter${WebhooksParameter}"
}
# API Gateway's access log: one JSON line per request, no headers, no keys.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "time": "$context.requestTime",
        "method": "$context.httpMethod",
        "path": "$context.resourcePath",
        "status": "$context.status",
        "bytes": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationMs": "$context.integrationLatency",
        "error": "$context.error.message",
    },
    separators=(",", ":"),
)


def merge_template(visibility: int) -> dict[str, Any]:
    log_groups = {function: f"{function}LogGroup" for function, _, _ in FUNCTIONS.values()}
    arns: dict[str, Any] = {
        "table": [
            {"Fn::GetAtt": ["JobsTable", "Arn"]},
            {"Fn::Sub": "${JobsTable.Arn}/index/*"},
        ],
        "queue": [{"Fn::GetAtt": ["JobsQueue", "Arn"]}],
        "objects": [{"Fn::Sub": "${PayloadBucket.Arn}/spool/*"}],
        "blobs": [{"Fn::Sub": "${PayloadBucket.Arn}/" + BLOB_PREFIX + "/*"}],
        "bucket": [{"Fn::GetAtt": ["PayloadBucket", "Arn"]}],
        # Each role writes to its own function's log group, nothing else.
        "logs": {
            role: [{"Fn::GetAtt": [log_groups[function], "Arn"]}]
            for function, _, role in FUNCTIONS.values()
        },
        "api_keys": [PARAMETER_ARN],
        # The named key, or any key of this account but only through SSM and only for
        # this parameter (the default aws/ssm key's id is not known in advance).
        "api_keys_key": [
            {
                "Fn::If": [
                    "HasApiKeysKmsKey",
                    {"Ref": "ApiKeysKmsKeyArn"},
                    {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
                ]
            }
        ],
        "api_keys_decrypt": {
            "StringEquals": {
                "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
                "kms:EncryptionContext:PARAMETER_ARN": PARAMETER_ARN,
            }
        },
        "smtp_password": [SMTP_PARAMETER_ARN],
        # Any key of this account, only through SSM and only for that parameter.
        "smtp_password_key": [
            {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}
        ],
        "smtp_password_decrypt": {
            "StringEquals": {
                "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
                "kms:EncryptionContext:PARAMETER_ARN": SMTP_PARAMETER_ARN,
            }
        },
        "webhooks": [WEBHOOKS_PARAMETER_ARN],
        # As the SMTP password's: any key of this account, through SSM, for that parameter.
        "webhooks_key": [
            {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}
        ],
        "webhooks_decrypt": {
            "StringEquals": {
                "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
                "kms:EncryptionContext:PARAMETER_ARN": WEBHOOKS_PARAMETER_ARN,
            }
        },
    }
    resources = _data_resources(visibility)
    for function, role_id, role in FUNCTIONS.values():
        resources[log_groups[function]] = _log_group(
            {"Fn::Sub": "/aws/lambda/${AWS::StackName}-" + function}
        )
        resources[role_id] = {
            "Properties": {
                "Policies": [
                    {
                        "PolicyName": f"{role_id}Policy",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": _statements(role, arns),
                        },
                    }
                ]
            }
        }
        variables: dict[str, Any] = {
            "SPOOL_STORE_URL": STORE_URL,
            "SPOOL_SQS_VISIBILITY_TIMEOUT": str(visibility),
        }
        if role in KEY_ROLES:
            variables["SPOOL_API_KEYS_PARAMETER"] = {"Ref": "ApiKeysParameter"}
        if role in SMTP_ROLES:
            variables["SPOOL_SMTP_PASSWORD_PARAMETER"] = _ref_if(
                "HasSmtpPasswordParameter", "SmtpPasswordParameter"
            )
        if role in WEBHOOK_ROLES:
            variables["SPOOL_WEBHOOKS_PARAMETER"] = _ref_if(
                "HasWebhooksParameter", "WebhooksParameter"
            )
        if role in BLOB_ROLES:
            variables["SPOOL_BLOB_BUCKET"] = {"Ref": "PayloadBucket"}
            variables["SPOOL_BLOB_PREFIX"] = BLOB_PREFIX
        resources[function] = {
            "Properties": {
                "Environment": {"Variables": variables},
                # Lambda logs where the stack says, with its retention (no race with
                # Lambda creating /aws/lambda/<name> on the first invocation).
                "LoggingConfig": {"LogGroup": {"Ref": log_groups[function]}, "LogFormat": "Text"},
            }
        }
    function, event = SQS_EVENT
    resources[function]["Properties"]["ReservedConcurrentExecutions"] = _ref_if(
        "ReservesWorkerConcurrency", "WorkerConcurrency"
    )
    resources[function]["Properties"]["Events"] = {
        event: {
            "Properties": {
                # Replaces Chalice's own Fn::Sub of a queue name (a deep merge cannot
                # swap Fn::Sub for Fn::GetAtt: both keys would stay).
                "Queue": {"Fn::Sub": "${JobsQueue.Arn}"},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "MaximumBatchingWindowInSeconds": BATCH_WINDOW,
                # The poller never invokes more at once than the reservation holds, so
                # the worker is never throttled (a throttled batch counts a receive).
                "ScalingConfig": {"MaximumConcurrency": {"Ref": "WorkerConcurrency"}},
            }
        }
    }
    resources.update(_api_stage())
    resources.update(
        _alarms({f: {"Ref": logical_id} for f, (logical_id, _, _) in FUNCTIONS.items()})
    )
    return {
        "Parameters": PARAMETERS,
        "Mappings": {"RetentionRules": RETENTION_MAP},
        "Conditions": CONDITIONS,
        "Resources": resources,
        "Outputs": OUTPUTS,
    }


# What API Gateway answers by itself, before any Lambda runs, in the app's error shape
# ({"error": {"code", "message", "details"}}, chalicelib/api/errors.py) with the app's
# headers: its own defaults are {"message": ...}, and a path no route matches is
# `403 Missing Authentication Token`, where `spool serve` says 404. Values in a
# gateway response's template are substituted, not evaluated: $context.error.messageString
# is the gateway's message already quoted as a JSON string; $context.httpMethod is an
# HTTP method token, which holds no quote or backslash.
GATEWAY_ERRORS: dict[str, tuple[int | None, str, str]] = {
    # type: (status, None for the gateway's own; code; message as a JSON value)
    "MISSING_AUTHENTICATION_TOKEN": (
        404,
        "not_found",
        '"no route for $context.httpMethod on this path"',
    ),
    "RESOURCE_NOT_FOUND": (404, "not_found", "$context.error.messageString"),
    "THROTTLED": (
        429,
        "rate_limited",
        '"too many requests to this API stage: try again shortly"',
    ),
    "QUOTA_EXCEEDED": (429, "rate_limited", "$context.error.messageString"),
    # A resource policy or a WAF web ACL the operator attaches: refused, not malformed.
    "ACCESS_DENIED": (403, "forbidden", "$context.error.messageString"),
    "WAF_FILTERED": (403, "forbidden", "$context.error.messageString"),
    "REQUEST_TOO_LARGE": (413, "payload_too_large", "$context.error.messageString"),
    "INTEGRATION_TIMEOUT": (504, "unavailable", "$context.error.messageString"),
    "DEFAULT_4XX": (None, "bad_request", "$context.error.messageString"),
    "DEFAULT_5XX": (None, "unavailable", "$context.error.messageString"),
}
# The app's API headers, and the dashboard's guards (chalicelib/ui/page.py): the gateway
# answers /ui too (403 without a token, 429, 5xx), before any route can add them. Its
# Content-Security-Policy is `sandbox` (no script, no form, no origin), not the page's:
# an error body is never a page, and a static header value is one '...' literal, which
# the page's 'self' and 'none' would end early.
GATEWAY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
RETRY_AFTER_SECONDS = {"THROTTLED": 1}


def gateway_responses() -> dict[str, Any]:
    """The API's x-amazon-apigateway-gateway-responses (see GATEWAY_ERRORS)."""
    out: dict[str, Any] = {}
    for kind, (status, code, message) in GATEWAY_ERRORS.items():
        headers = dict(GATEWAY_HEADERS)
        if kind in RETRY_AFTER_SECONDS:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS[kind])
        body = f'{{"error": {{"code": "{code}", "message": {message}, "details": null}}}}'
        response: dict[str, Any] = {
            "responseParameters": {
                f"gatewayresponse.header.{name}": f"'{value}'" for name, value in headers.items()
            },
            "responseTemplates": {"application/json": body},
        }
        if status is not None:
            response["statusCode"] = str(status)
        out[kind] = response
    return out


def _api_stage() -> dict[str, Any]:
    """Throttling and an access log on Chalice's API stage (RestAPI), and the
    region's API Gateway logging role that access logs need."""
    kept = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    return {
        "ApiAccessLogGroup": _log_group({"Fn::Sub": "/aws/apigateway/${AWS::StackName}-access"}),
        # API Gateway writes logs only once the region's account settings name a
        # role it may use: a per-region setting, shared by every API. Retained, so
        # deleting this stack never breaks other APIs' logging.
        "ApiGatewayLogsRole": {
            "Type": "AWS::IAM::Role",
            **kept,
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "apigateway.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "ManagedPolicyArns": [
                    {
                        "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                        "AmazonAPIGatewayPushToCloudWatchLogs"
                    }
                ],
            },
        },
        "ApiGatewayAccount": {
            "Type": "AWS::ApiGateway::Account",
            **kept,
            "Properties": {"CloudWatchRoleArn": {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}},
        },
        "RestAPI": {
            "DependsOn": ["ApiGatewayAccount"],
            "Properties": {
                # Any value stops SAM from also deploying a stage named "Stage", which
                # would serve the same API without this throttling or access log.
                "OpenApiVersion": "2.0",
                # Merged into Chalice's swagger: the gateway's own refusals in Spool's shape.
                "DefinitionBody": {"x-amazon-apigateway-gateway-responses": gateway_responses()},
                "MethodSettings": [
                    {
                        "ResourcePath": "/*",
                        "HttpMethod": "*",
                        "ThrottlingRateLimit": {"Ref": "ApiThrottleRateLimit"},
                        "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurstLimit"},
                        # Execution logs would make a log group without a retention.
                        "LoggingLevel": "OFF",
                        "MetricsEnabled": False,
                    }
                ],
                "AccessLogSetting": {
                    # The group's ARN without GetAtt's trailing ":*", which API Gateway refuses.
                    "DestinationArn": {
                        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                        ":log-group:${ApiAccessLogGroup}"
                    },
                    "Format": ACCESS_LOG_FORMAT,
                },
            },
        },
    }


def data_stack(visibility: int) -> dict[str, Any]:
    names = {
        "table": {"Fn::Sub": "spool-${Stage}-jobs"},
        "queue": {"Fn::Sub": "spool-${Stage}-jobs"},
        "dlq": {"Fn::Sub": "spool-${Stage}-jobs-dlq"},
        "bucket": {"Fn::Sub": "spool-${Stage}-payloads-${AWS::AccountId}-${AWS::Region}"},
    }
    resources = _data_resources(visibility, names)
    # The log groups `chalice deploy`'s functions write to, made first with a retention
    # (the policy files grant no logs:CreateLogGroup).
    for function, (logical_id, _, _) in FUNCTIONS.items():
        name = chalice_function_name("${Stage}", function)
        resources[f"{logical_id}LogGroup"] = _log_group({"Fn::Sub": f"/aws/lambda/{name}"})
    resources.update(
        _alarms({f: {"Fn::Sub": chalice_function_name("${Stage}", f)} for f in FUNCTIONS})
    )
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Spool's table, queues and bucket, for `chalice deploy --stage <Stage>`",
        "Parameters": {
            "Stage": {"Type": "String", "AllowedValues": list(STAGES), "Default": "dev"},
            "LogRetentionDays": LOG_RETENTION,
            "RetentionDays": RETENTION,
            "AlarmTopicArn": ALARM_TOPIC,
        },
        "Mappings": {"RetentionRules": RETENTION_MAP},
        "Conditions": ALARM_CONDITIONS,
        "Resources": resources,
        "Outputs": OUTPUTS,
    }


def policy_file(stage: str, role: str) -> dict[str, Any]:
    """For `chalice deploy`: the data stack's fixed names, in the caller's own account.

    A policy file is plain JSON (no CloudFormation to fill the account in), so
    the account is the IAM policy variable ${aws:PrincipalAccount}: the role's
    own account, wherever it is deployed, and the bucket's region is
    ${aws:RequestedRegion}. S3 ARNs carry no account, so the bucket is also held
    to one the account owns (s3:ResourceAccount).
    """
    prefix = f"spool-{stage}"
    account = "${aws:PrincipalAccount}"
    # Not `-*`: a wildcard in the bucket's name runs across the slash, so `...-*/spool/*`
    # also granted every key with /spool/ anywhere in it. botocore follows S3's region
    # redirect, so a call reaches the bucket's own region even from another one.
    bucket = f"{prefix}-payloads-{account}-${{aws:RequestedRegion}}"
    function = next(f for f, (_, _, r) in FUNCTIONS.items() if r == role)
    log_group = f"arn:aws:logs:*:{account}:log-group:/aws/lambda/" + chalice_function_name(
        stage, function
    )
    parameter = f"arn:aws:ssm:*:{account}:parameter{api_keys_parameter(stage)}"
    smtp = f"arn:aws:ssm:*:{account}:parameter{smtp_password_parameter(stage)}"
    hooks = f"arn:aws:ssm:*:{account}:parameter{webhooks_parameter(stage)}"
    arns: dict[str, Any] = {
        "table": [
            f"arn:aws:dynamodb:*:{account}:table/{prefix}-jobs",
            f"arn:aws:dynamodb:*:{account}:table/{prefix}-jobs/index/*",
        ],
        "queue": [f"arn:aws:sqs:*:{account}:{prefix}-jobs"],
        # The data stack names it spool-<stage>-payloads-<account>-<region>.
        "objects": [f"arn:aws:s3:::{bucket}/spool/*"],
        "blobs": [f"arn:aws:s3:::{bucket}/{BLOB_PREFIX}/*"],
        "bucket": [f"arn:aws:s3:::{bucket}"],
        "objects_condition": {"StringEquals": {"s3:ResourceAccount": account}},
        "logs": {role: [log_group, f"{log_group}:*"]},
        "api_keys": [parameter],
        "api_keys_key": [f"arn:aws:kms:*:{account}:key/*"],
        "api_keys_decrypt": {
            "StringLike": {
                "kms:ViaService": "ssm.*.amazonaws.com",
                "kms:EncryptionContext:PARAMETER_ARN": parameter,
            }
        },
        "smtp_password": [smtp],
        "smtp_password_key": [f"arn:aws:kms:*:{account}:key/*"],
        "smtp_password_decrypt": {
            "StringLike": {
                "kms:ViaService": "ssm.*.amazonaws.com",
                "kms:EncryptionContext:PARAMETER_ARN": smtp,
            }
        },
        "webhooks": [hooks],
        "webhooks_key": [f"arn:aws:kms:*:{account}:key/*"],
        "webhooks_decrypt": {
            "StringLike": {
                "kms:ViaService": "ssm.*.amazonaws.com",
                "kms:EncryptionContext:PARAMETER_ARN": hooks,
            }
        },
    }
    return {"Version": "2012-10-17", "Statement": _statements(role, arns)}


def outputs(chalice_config: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    visibility = visibility_for(worker_timeout(chalice_config))
    files = {
        ROOT / "infra" / "resources.json": merge_template(visibility),
        ROOT / "infra" / "data-stack.json": data_stack(visibility),
    }
    for stage in STAGES:
        for _, _, role in FUNCTIONS.values():
            files[ROOT / ".chalice" / f"policy-{stage}-{role}.json"] = policy_file(stage, role)
    return files


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stale = []
    for path, document in outputs(config).items():
        text = render(document)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date: {names}; run .venv/bin/python infra/generate.py", file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
