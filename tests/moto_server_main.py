"""moto_server as the tests run it (tests/moto_proc.py): moto's own server, with its
DynamoDB made to keep two promises real DynamoDB keeps and moto_server does not.

Several processes (`spool serve`, the SQS poller, workers) write through one
moto_server, each request on a thread of its own, and moto 5.2 guards none of its
DynamoDB state with a lock:

- A cancelled TransactWriteItems puts back a copy of each table it names, taken
  before it began: every write another request made to those tables meanwhile is
  undone (an enqueue repeating an idempotency key put a finished job back to
  `queued`), and the copy, taken while another thread adds an item, can fail with
  "dictionary changed size during iteration" (a 500).
- An UpdateItem applies its actions to the stored item one at a time, in place: a
  GetItem on another thread can read half of it (CI read a job `dead` with no
  `finished_at`, stop 59).

Here the undo is tests/moto_rollback.py's (the items a transaction names, as
in-process moto has it), and one lock is held around each DynamoDB request, from
its parsed parameters to its serialized answer (`DynamoHandler.call_action`), so
each is applied whole before the next begins, as DynamoDB serializes writes to an
item. SQS and S3 requests never take it. tests/test_chaos_s60j_moto_server_atomic.py
shows both quirks gone. Users' own moto_server (docs/aws.md) is plain moto.

Run as `python -m tests.moto_server_main -H 127.0.0.1 -p 0`: moto_server's arguments
and its "Running on" line.

SIGTERM and SIGINT end it at once (`quit_now`): moto_server's own handler raised
SystemExit, and the interpreter then took 0.8-2.7 s to tear down moto's modules and
state (all in memory, nothing kept) on every stop and restart of every test.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any

from tests import moto_rollback

_DYNAMODB = threading.Lock()


def install() -> None:
    """The item-by-item undo, and DynamoDB requests one at a time."""
    from moto.dynamodb.responses import DynamoHandler

    moto_rollback.install()
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _DYNAMODB:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def quit_now(signum: int, frame: Any) -> None:
    """moto_server's SIGTERM/SIGINT handler here: what it printed is flushed to its
    log, then the process ends without tearing the interpreter down."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    import moto.server

    install()
    # moto's main installs moto.server.signal_handler (a sys.exit) for both signals.
    moto.server.signal_handler = quit_now
    moto.server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
