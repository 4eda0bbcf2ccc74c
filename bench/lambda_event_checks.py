"""Instructions the API function's event checks cost, beside one whole Lambda request.

    SPOOL_STORE_URL=memory:// SPOOL_DEMO_HANDLERS=true SPOOL_LOG_LEVEL=WARNING \\
    SPOOL_API_KEYS=lambda-runner-key-0123456789=lambda PYTHONPATH=. \\
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m bench.lambda_event_checks
    grep -h "^desc: Trigger\\|^summary" /tmp/cg.* | paste - -   # then divide by N

Phases (N calls each): gateway_event.value_problem on a GET /status/{id} event of
twenty headers as API Gateway sends them (headers and multiValueHeaders, a query),
and `app.app(event, context)` for that request with the check and with it replaced
by one that finds nothing.
"""

from __future__ import annotations

import json
from typing import Any

from bench import callgrind_marks

N = 300


def main() -> None:
    import app
    from chalicelib.api import gateway_event
    from tests import lambda_runner as lr  # the Lambda context and events tests use

    body = json.dumps({"type": "echo", "payload": {"n": 1}})
    added = app.app(lr.api_event("POST", "/enqueue", "/enqueue", body), lr.Context(30_000))
    job_id = json.loads(added["body"])["id"]
    event = lr.api_event("GET", f"/status/{job_id}", "/status/{id}")
    for i in range(12):
        event["headers"][f"x-h{i}"] = "v" * 30
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    event["multiValueQueryStringParameters"] = {"wait": ["0"]}
    assert app.app(event, lr.Context(30_000))["statusCode"] == 200
    checked = gateway_event.value_problem

    def unchecked() -> Any:
        gateway_event.value_problem = lambda _event: None  # type: ignore[assignment]
        try:
            return app.app(event, lr.Context(30_000))
        finally:
            gateway_event.value_problem = checked  # type: ignore[assignment]

    callgrind_marks.count_phases(
        {
            "value_problem": lambda: checked(event),
            "request_with_check": lambda: app.app(event, lr.Context(30_000)),
            "request_without_check": unchecked,
        },
        n=N,
        warmup=50,
        freeze_heap=True,
    )


if __name__ == "__main__":
    main()
