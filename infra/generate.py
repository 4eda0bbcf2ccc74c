"""Write the AWS infrastructure files from one description.

    .venv/bin/python infra/generate.py          # rewrite the files
    .venv/bin/python infra/generate.py --check  # exit 1 if any file is stale

Outputs (all checked in, all reviewed as JSON):

- infra/resources.json: what `chalice package --merge-template` adds to
  Chalice's SAM template: the jobs table, the queue and its dead-letter queue,
  the payload bucket, each function's role policy scoped to those resources,
  the functions' store settings, and ReportBatchItemFailures on the SQS event
  source.
- infra/data-stack.json: the same table, queues and bucket as a stack of their
  own, with names fixed by stage, for `chalice deploy` (which cannot create them).
- .chalice/policy-<stage>-<role>.json: the role policies `chalice deploy`
  attaches (autogen_policy is off), scoped to the data stack's names.

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
VISIBILITY_FACTOR = 6  # AWS's advice for SQS event sources: 6x the function timeout
MAX_RECEIVE_COUNT = 5
RETENTION_DAYS = 30  # the store's default TTL for finished jobs
PAYLOAD_DAYS = 366 + RETENTION_DAYS + 1  # a job may wait a year before it runs
STORE_OPTIONS = "reap_every=30"

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
        "queue": ["sqs:GetQueueUrl", "sqs:SendMessage"],
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
    },
    "worker": {
        "table": [
            "dynamodb:BatchGetItem",
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:Scan",
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
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
    },
    "scheduler": {
        "table": [
            "dynamodb:BatchGetItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:UpdateItem",
        ],
        "queue": ["sqs:GetQueueUrl", "sqs:SendMessage"],
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
    },
}
LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]


def worker_timeout(config: dict[str, Any]) -> int:
    """The longest run_jobs timeout any stage sets (Lambda's default is 60 s)."""
    timeouts = [
        int(stage.get("lambda_functions", {}).get("run_jobs", {}).get("lambda_timeout", 60))
        for stage in config.get("stages", {}).values()
    ]
    return max([int(config.get("lambda_timeout", 60)), *timeouts])


def _statements(role: str, arns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    statements = [
        {
            "Sid": kind.capitalize(),
            "Effect": "Allow",
            "Action": actions,
            "Resource": arns[kind],
        }
        for kind, actions in ACTIONS[role].items()
    ]
    statements.append(
        {"Sid": "Logs", "Effect": "Allow", "Action": LOG_ACTIONS, "Resource": arns["logs"]}
    )
    return statements


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
    }
    if name is not None:
        properties = {"TableName": name, **properties}
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
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
    return {
        "JobsDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": dlq},
        "JobsQueue": {"Type": "AWS::SQS::Queue", "Properties": queue},
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
                    "ExpirationInDays": RETENTION_DAYS + 1,
                },
                {
                    "Id": "payloads",
                    "Status": "Enabled",
                    "Prefix": "spool/payloads/",
                    "ExpirationInDays": PAYLOAD_DAYS,
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
            "Properties": {
                "Bucket": {"Ref": "PayloadBucket"},
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            # A deny narrows access: here s3:* is the point.
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [
                                {"Fn::GetAtt": ["PayloadBucket", "Arn"]},
                                {"Fn::Sub": "${PayloadBucket.Arn}/*"},
                            ],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
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
    "Fn::Sub": "dynamodb://${JobsTable}?queue=${JobsQueue}&bucket=${PayloadBucket}&" + STORE_OPTIONS
}

OUTPUTS = {
    "JobsTableName": {"Value": {"Ref": "JobsTable"}},
    "JobsQueueUrl": {"Value": {"Ref": "JobsQueue"}},
    "JobsDeadLetterQueueUrl": {"Value": {"Ref": "JobsDeadLetterQueue"}},
    "PayloadBucketName": {"Value": {"Ref": "PayloadBucket"}},
    "StoreUrl": {"Value": STORE_URL},
}


# -- the three outputs ------------------------------------------------------------------


def merge_template(visibility: int) -> dict[str, Any]:
    arns: dict[str, list[Any]] = {
        "table": [
            {"Fn::GetAtt": ["JobsTable", "Arn"]},
            {"Fn::Sub": "${JobsTable.Arn}/index/*"},
        ],
        "queue": [{"Fn::GetAtt": ["JobsQueue", "Arn"]}],
        "objects": [{"Fn::Sub": "${PayloadBucket.Arn}/spool/*"}],
        "logs": [
            {
                "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                ":log-group:/aws/lambda/${AWS::StackName}-*"
            },
            {
                "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                ":log-group:/aws/lambda/${AWS::StackName}-*:*"
            },
        ],
    }
    resources = _data_resources(visibility)
    for function, role_id, role in FUNCTIONS.values():
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
        resources[function] = {
            "Properties": {
                "Environment": {
                    "Variables": {
                        "SPOOL_STORE_URL": STORE_URL,
                        "SPOOL_SQS_VISIBILITY_TIMEOUT": str(visibility),
                    }
                }
            }
        }
    function, event = SQS_EVENT
    resources[function]["Properties"]["Events"] = {
        event: {
            "Properties": {
                # Replaces Chalice's own Fn::Sub of a queue name (a deep merge cannot
                # swap Fn::Sub for Fn::GetAtt: both keys would stay).
                "Queue": {"Fn::Sub": "${JobsQueue.Arn}"},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            }
        }
    }
    return {"Resources": resources, "Outputs": OUTPUTS}


def data_stack(visibility: int) -> dict[str, Any]:
    names = {
        "table": {"Fn::Sub": "spool-${Stage}-jobs"},
        "queue": {"Fn::Sub": "spool-${Stage}-jobs"},
        "dlq": {"Fn::Sub": "spool-${Stage}-jobs-dlq"},
        "bucket": {"Fn::Sub": "spool-${Stage}-payloads-${AWS::AccountId}-${AWS::Region}"},
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Spool's table, queues and bucket, for `chalice deploy --stage <Stage>`",
        "Parameters": {
            "Stage": {"Type": "String", "AllowedValues": list(STAGES), "Default": "dev"}
        },
        "Resources": _data_resources(visibility, names),
        "Outputs": OUTPUTS,
    }


def policy_file(stage: str, role: str) -> dict[str, Any]:
    """For `chalice deploy`: the data stack's fixed names, any region and account."""
    prefix = f"spool-{stage}"
    arns: dict[str, list[Any]] = {
        "table": [
            f"arn:aws:dynamodb:*:*:table/{prefix}-jobs",
            f"arn:aws:dynamodb:*:*:table/{prefix}-jobs/index/*",
        ],
        "queue": [f"arn:aws:sqs:*:*:{prefix}-jobs"],
        "objects": [f"arn:aws:s3:::{prefix}-payloads-*/spool/*"],
        # chalice deploy names functions spool-<stage> (the API) and spool-<stage>-<name>.
        "logs": [
            f"arn:aws:logs:*:*:log-group:/aws/lambda/{prefix}*",
            f"arn:aws:logs:*:*:log-group:/aws/lambda/{prefix}*:*",
        ],
    }
    return {"Version": "2012-10-17", "Statement": _statements(role, arns)}


def outputs(chalice_config: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    visibility = VISIBILITY_FACTOR * worker_timeout(chalice_config)
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
