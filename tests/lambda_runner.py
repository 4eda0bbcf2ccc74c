"""Runs one job through the unzipped Lambda package, as Lambda would.

Started by tests/test_lambda_package.py with a Python that has nothing but
boto3 (.tools/lambda-venv), the unzipped package first on PYTHONPATH and as the
working directory (/var/task). Only the standard library and the package are
used here: no tests.*, no project venv.

    python lambda_runner.py types            # the handler types the runtime offers
    python lambda_runner.py run TYPE PAYLOAD  # enqueue over the API function, run it
                                              # on the worker function, print its record

The job goes in through the API function's handler (`app.app`, an API Gateway
proxy event) and is run by the worker function's handler (`app.run_jobs`, an
SQS event naming it), the handler names Chalice gives Lambda.
"""

from __future__ import annotations

import json
import sys
from typing import Any

KEY = "lambda-runner-key-0123456789"
TENANT = "lambda"


class Context:
    """The part of Lambda's context object the handlers read."""

    aws_request_id = "lambda-runner"
    function_name = "spool-dev"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:spool-dev"
    log_group_name = "/aws/lambda/spool-dev"
    log_stream_name = "runner"

    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def api_event(method: str, path: str, resource: str, body: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json", "x-api-key": KEY, "host": "lambda"}
    params = {"id": path.rsplit("/", 1)[1]} if "{id}" in resource else None
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "requestId": "lambda-runner",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def sqs_event(job_id: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"msg-{job_id}",
                "receiptHandle": "receipt",
                "body": json.dumps({"id": job_id}),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:spool-jobs",
                "awsRegion": "us-east-1",
            }
        ]
    }


def offered_types() -> list[str]:
    from chalicelib import runtime

    return runtime.current().registry.types()


def run(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    import app

    body = json.dumps({"type": type_, "payload": payload})
    added = app.app(api_event("POST", "/enqueue", "/enqueue", body), Context(30_000))
    if added["statusCode"] != 201:
        return {"enqueue": added}
    job_id = json.loads(added["body"])["id"]
    batch = app.run_jobs(sqs_event(job_id), Context(900_000))
    status = app.app(api_event("GET", f"/status/{job_id}", "/status/{id}"), Context(30_000))
    modules = sorted({name.split(".")[0] for name in sys.modules})
    return {"batch": batch, "status": json.loads(status["body"]), "modules": modules}


def main() -> int:
    if sys.argv[1] == "types":
        print(json.dumps(offered_types()))
    else:
        print(json.dumps(run(sys.argv[2], json.loads(sys.argv[3]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
