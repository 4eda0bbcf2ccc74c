"""Who is running an attempt: "host:pid", or "lambda:<aws request id>" on Lambda.

Attempt history and worker beats name the worker with this id, so a person can
go from a failed attempt to the machine and process (or the Lambda
invocation, whose request id finds its CloudWatch log stream) that ran it.

The events path sets the request id at the start of each invocation and
clears it at the end; Lambda runs one invocation per process at a time, so a
process-wide value is right there.
"""

from __future__ import annotations

import os
import socket

_request_id: str | None = None
_host: str | None = None


def set_lambda_request(request_id: str | None) -> None:
    """Name this process's worker after the Lambda invocation running now (None: clear)."""
    global _request_id
    _request_id = request_id or None


def process() -> str:
    """This process's name for heartbeats: stable across invocations, so a warm
    Lambda container counts as one live worker, not one per request. On Lambda
    the log stream names the container (and finds its logs); elsewhere host:pid."""
    global _host
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    if stream:
        return f"lambda:{stream}"
    if _host is None:
        _host = socket.gethostname()
    return f"{_host}:{os.getpid()}"


def current() -> str:
    """The worker id for what this process runs now (the pid is read each time: forks)."""
    global _host
    if _request_id is not None:
        return f"lambda:{_request_id}"
    if _host is None:
        _host = socket.gethostname()
    return f"{_host}:{os.getpid()}"
