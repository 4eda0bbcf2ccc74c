"""Instructions the API function's event checks cost, beside one whole Lambda request.

    SPOOL_STORE_URL=memory:// SPOOL_DEMO_HANDLERS=true SPOOL_LOG_LEVEL=WARNING \\
    SPOOL_API_KEYS=lambda-runner-key-0123456789=lambda PYTHONPATH=. \\
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m bench.lambda_event_checks
    grep -h "^desc: Trigger\\|^summary" /tmp/cg.* | paste - -   # then divide by N

Phases (N calls each): gateway_event.value_problem, then malformed_headers, on a
GET /status/{id} event of twenty headers as API Gateway sends them (headers and
multiValueHeaders, a query), and `app.app(event, context)` for that request with
every check, and with value_problem or malformed_headers replaced by one that finds
nothing; then control_in_path (stop 49) and the request without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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

    def without(check: str, finding: Any) -> Callable[[], Any]:
        """The request with gateway_event's `check` replaced by one finding nothing."""
        kept = getattr(gateway_event, check)

        def request() -> Any:
            setattr(gateway_event, check, lambda _event: finding)
            try:
                return app.app(event, lr.Context(30_000))
            finally:
                setattr(gateway_event, check, kept)

        return request

    callgrind_marks.count_phases(
        {
            "value_problem": lambda: gateway_event.value_problem(event),
            "malformed_headers": lambda: gateway_event.malformed_headers(event),
            "request_with_check": lambda: app.app(event, lr.Context(30_000)),
            "request_without_check": without("value_problem", None),
            "request_without_control_check": without("malformed_headers", False),
            "control_in_path": lambda: gateway_event.control_in_path(event),
            "request_without_path_check": without("control_in_path", None),
        },
        n=N,
        warmup=50,
        freeze_heap=True,
    )


if __name__ == "__main__":
    main()
