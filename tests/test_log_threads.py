"""Which threads' lines carry the emulated invocation's aws_request_id.

The id is process-wide (chalicelib/logs.py set_request_id): on Lambda every thread
is the invocation's. Under `spool serve` the invocation runs on the emulator's thread
beside threads that are no part of it (the main thread, HTTP, metrics, signals,
webhooks); those say so, and their lines carry no id. A thread local/ starts without
saying so would carry whatever job run is under way: the structural test below
fails for any new one."""

from __future__ import annotations

import ast
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from waitress.task import Task as WaitressTask

from chalicelib import logs
from chalicelib.config import Settings

ROOT = Path(__file__).resolve().parents[1]
REQUEST_ID = "req-the-invocation"
PORT = 0  # any free port: the test reads the one bound from server.url

# The threads of local/ that run the emulated invocation itself: (file, thread name).
INVOCATION_THREADS = {
    ("local/emulator.py", "spool-emulator"),
    ("local/sqs_poller.py", "spool-sqs-poller"),
}
# What starts threads without naming threading.Thread, and how local/ marks them.
POOLS = {"ThreadedTaskDispatcher", "ThreadingHTTPServer", "ThreadingMixIn", "ThreadPoolExecutor"}


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure(Settings(), stream=buf, force=True)
    logs.set_request_id(REQUEST_ID)
    try:
        yield buf
    finally:
        logs.set_request_id(None)
        logs.reset()


def _thread_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in {"Thread", "start_new_thread", *POOLS}:
            yield node, called


def test_every_thread_local_starts_is_outside_the_invocation_or_runs_it() -> None:
    unmarked = []
    for path in sorted((ROOT / "local").glob("*.py")):
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text("utf-8"))
        for call, called in _thread_calls(tree):
            names = [k.value for k in call.keywords if k.arg == "name"]
            name = names[0].value if names and isinstance(names[0], ast.Constant) else None
            if (where, name) not in INVOCATION_THREADS:
                unmarked.append(f"{where}:{call.lineno} {called}(name={name!r})")
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {getattr(b, "attr", getattr(b, "id", "")) for b in node.bases}
            methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
            if "ThreadedTaskDispatcher" in bases and "handler_thread" not in methods:
                unmarked.append(f"{where}:{node.lineno} class {node.name}")
            if bases & {"ThreadingHTTPServer", "ThreadingMixIn"} and (
                "process_request_thread" not in methods
            ):
                unmarked.append(f"{where}:{node.lineno} class {node.name}")
    assert not unmarked, (
        "threads started beside the emulated invocation take its aws_request_id: start "
        "them with chalicelib.logs.outside_thread (or list one that runs the invocation "
        "in INVOCATION_THREADS): " + ", ".join(unmarked)
    )


def test_every_thread_the_engine_starts_says_whose_it_is() -> None:
    """chalicelib's threads (a worker's pool, a checkpoint, a heartbeat, a push) run in
    Lambda and under `spool serve` alike: each is its starter's (logs.inherited_thread)
    or the process's (logs.outside_thread), and a pool's threads its maker's
    (initializer=logs.inherited_pool()), never a bare threading.Thread, which would
    take the invocation's id whoever started it."""
    bare = []
    for path in sorted((ROOT / "chalicelib").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        if where == "chalicelib/logs.py":  # where the two are made
            continue
        for call, called in _thread_calls(ast.parse(path.read_text("utf-8"))):
            if called == "ThreadPoolExecutor" and any(
                k.arg == "initializer" and "inherited_pool" in ast.unparse(k.value)
                for k in call.keywords
            ):
                continue
            bare.append(f"{where}:{call.lineno} {called}")
    assert not bare, "start them with logs.inherited_thread or logs.outside_thread: " + (
        ", ".join(bare)
    )


def test_a_thread_started_beside_the_invocation_stays_beside_it(lines: io.StringIO) -> None:
    log = logging.getLogger("spool.storage")

    def starts_one(which: str) -> None:
        child = logs.inherited_thread(lambda: log.warning(which), name=which)
        child.start()
        child.join(10)

    beside = logs.outside_thread(starts_one, args=("from beside",), name="server")
    beside.start()
    beside.join(10)
    starts_one("from the invocation")  # this thread is the invocation's
    [from_beside, from_invocation] = _spool_lines(lines)
    assert "from beside" in from_beside and "aws_request_id" not in from_beside
    assert from_invocation.endswith(f"aws_request_id={REQUEST_ID}")


def _spool_lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if " spool." in line]


def test_an_outside_thread_s_lines_carry_no_id_while_the_invocation_s_do(
    lines: io.StringIO,
) -> None:
    thread = logs.outside_thread(
        lambda: logging.getLogger("spool.serve").warning("beside"), name="beside"
    )
    thread.start()
    thread.join(10)
    logging.getLogger("spool.jobs").warning("in it")
    [beside, in_it] = _spool_lines(lines)
    assert "aws_request_id" not in beside
    assert in_it.endswith(f"aws_request_id={REQUEST_ID}")


def test_the_main_thread_is_outside_for_the_block_only(lines: io.StringIO) -> None:
    log = logging.getLogger("spool.serve")
    with logs.outside_invocation():
        log.warning("supervising")
        with logs.outside_invocation():  # nested: still outside after the inner block
            pass
        log.warning("still supervising")
    log.warning("after")
    [first, second, after] = _spool_lines(lines)
    assert "aws_request_id" not in first and "aws_request_id" not in second
    assert after.endswith(f"aws_request_id={REQUEST_ID}")


def test_waitress_s_request_threads_are_outside(lines: io.StringIO) -> None:
    from local.inline_dispatch import TaskDispatcher

    done = threading.Event()

    class Task:
        def service(self) -> None:
            logging.getLogger("spool.http").warning("served")
            done.set()

    dispatcher = TaskDispatcher()
    dispatcher.set_thread_count(1)
    try:
        dispatcher.add_task(cast(WaitressTask, Task()))
        assert done.wait(10)
    finally:
        dispatcher.shutdown(timeout=5)
    [served] = _spool_lines(lines)
    assert "aws_request_id" not in served


def test_a_worker_scrape_s_thread_is_outside(lines: io.StringIO) -> None:
    from local.metrics_http import MetricsServer

    def exposition() -> Any:
        raise RuntimeError("the store is down")  # logged by the request's thread

    server = MetricsServer("127.0.0.1", PORT, exposition, "text/plain")
    server.start()
    try:
        reply = requests.get(server.url, timeout=10)
    finally:
        server.stop()
    assert reply.status_code == 503
    [failed] = _spool_lines(lines)
    assert "metrics scrape failed" in failed and "aws_request_id" not in failed
