"""Who is running an attempt: "host:pid:tag", or "lambda:<aws request id>" on Lambda.

Attempt history and worker beats name the worker with this id, so a person can
go from a failed attempt to the machine and process (or the Lambda
invocation, whose request id finds its CloudWatch log stream) that ran it.

host:pid alone is not unique: with host networking (docker --network host,
Kubernetes hostNetwork) every container's worker can be PID 1 on one hostname,
and they would share a heartbeat, a Pushgateway group and a lease name. The tag
is a few random hex digits made once per process start (and again in a forked
child), so the id stays readable and still leads to host and pid.

The events path sets the request id at the start of each invocation and
clears it at the end; Lambda runs one invocation per process at a time, so a
process-wide value is right there.
"""

from __future__ import annotations

import os
import secrets
import socket

_request_id: str | None = None
_host: str | None = None
_tag: str | None = None
# Read once, and again in a forked child: getpid is a system call, and the worker asked
# it on every attempt record and every SQLite write (stop 53: about 9% of the
# interpreter lock's time in a no-op drain, on a VM where the call is not cheap).
_pid = os.getpid()


def _forked() -> None:
    """A forked child is another worker: it makes a tag of its own when first asked,
    and reads its pid."""
    global _tag, _pid
    _tag = None
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's pid, as os.getpid() but without the system call: read at start
    and in every fork child (os.register_at_fork, which os.fork, multiprocessing and C
    code that forks through PyOS_AfterFork_Child all run)."""
    return _pid


def set_lambda_request(request_id: str | None) -> None:
    """Name this process's worker after the Lambda invocation running now (None: clear)."""
    global _request_id
    _request_id = request_id or None


def process_tag() -> str:
    """This process's tag: made at its first use, and again in a forked child. With the
    pid it names one process start, where a pid alone is reused (pid namespaces,
    wrap-around); chalicelib/api/metrics.py names the per-process cache counts by both."""
    global _tag
    if _tag is None:
        _tag = secrets.token_hex(3)
    return _tag


def this_process() -> tuple[int, str]:
    """This process start, for an object that must know whether it was made in this
    process or came along through a fork: the pid alone does not tell, where a child
    is given a pid it has inherited objects from (a grandparent's, since exited). The
    tag is made again, and the pid read again, in every fork child
    (os.register_at_fork)."""
    return _pid, process_tag()


def host_process() -> str:
    """host:pid:tag for this process (pid and tag are a fork child's own: _forked)."""
    global _host
    if _host is None:
        _host = socket.gethostname()
    return f"{_host}:{_pid}:{process_tag()}"


def process() -> str:
    """This process's name for heartbeats: stable across invocations, so a warm
    Lambda container counts as one live worker, not one per request. On Lambda
    the log stream names the container (and finds its logs); elsewhere host:pid:tag."""
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    if stream:
        return f"lambda:{stream}"
    return host_process()


def current() -> str:
    """The worker id for what this process runs now: the invocation on Lambda."""
    if _request_id is not None:
        return f"lambda:{_request_id}"
    return host_process()
