"""Shared fixtures. The guards run before anything imports boto3:

- the AWS guard (fake credentials, no metadata address) so no client reaches
  for real AWS;
- the network guard (tests/netguard/spool_netguard.py): any connection,
  datagram or name lookup outside 127.0.0.0/8 is refused, in this process and
  in every Python process a test starts, and fails the test that made it;
- Chalice's test client applies the `local` stage unless a test names another,
  so no stage's real AWS store URL is picked up by default;
- the demo handlers (echo, sleep, fail), off in deployments, are on for tests
  (SPOOL_DEMO_HANDLERS=1, inherited by child processes);
- on parallel workers (`make pytest`: pytest-xdist, `--dist loadgroup`), the
  tests of a module that share a module-scoped fixture run on one worker, so
  the fixture (a server, a built package, a browser) is set up once
  (pytest_collection_modifyitems below; docs/testing.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Set at import time (not only in a fixture) so even collection-time imports are safe.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ["SPOOL_DEMO_HANDLERS"] = "1"

import pytest
from hypothesis import settings as hypothesis_settings

from chalicelib import logs
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry, registry
from chalicelib.runtime import BUILTIN_HANDLER_MODULES, DEMO_HANDLER_MODULE
from chalicelib.storage.memory import MemoryStore
from tests import isolation, moto_rollback, moto_sqs_counts
from tests.backends import BACKENDS, open_backend
from tests.netguard import spool_netguard as netguard
from tests.procs import bytecode_kept

# Property tests hold no deadline: a draw's time follows the machine's load, and speed
# is measured in bench/, never asserted. Under CI (.ci/run sets SPOOL_HYPOTHESIS_PROFILE)
# they draw the same examples every run, so a landing never waits on a draw no run
# before it met; elsewhere each run draws anew, where new counterexamples are found.
hypothesis_settings.register_profile("spool", deadline=None)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, database=None)
hypothesis_settings.load_profile(
    os.environ.get("SPOOL_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "spool")
)


def _install_network_guard() -> None:
    if os.environ.get(netguard.ENV_ALLOW) == "1":
        return
    fd, log_path = tempfile.mkstemp(prefix="spool-netguard-", suffix=".log")
    os.close(fd)

    def remove_log() -> None:
        if os.path.exists(log_path):
            os.remove(log_path)

    atexit.register(remove_log)
    netguard.install(log_path)
    os.environ.update(netguard.child_env(os.environ))
    real_init = subprocess.Popen.__init__

    def guarded_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        # Tests build child environments many ways ({**os.environ, "PYTHONPATH": ...});
        # whichever they pass, the child runs under the guard.
        if kwargs.get("env") is not None:
            kwargs["env"] = netguard.child_env(kwargs["env"])
        real_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = guarded_init  # type: ignore[method-assign]


def _local_stage_by_default() -> None:
    """chalice.test.Client applies a stage's environment variables; its default stage
    is `dev`, whose store URL is a real DynamoDB table. Tests get `local` unless they
    name a stage."""
    from chalice import test as chalice_test

    real_init = chalice_test.Client.__init__

    def init(self: Any, app: Any, stage_name: str = "local", project_dir: str = ".") -> None:
        real_init(self, app, stage_name=stage_name, project_dir=project_dir)

    chalice_test.Client.__init__ = init  # type: ignore[method-assign]


def _moto_reaches_every_session() -> None:
    """moto's in-process mock intercepts through a handler it adds to botocore's
    BUILTIN_HANDLERS when moto.core is first imported, and a botocore session copies
    that list when it is made. The store keeps one session per process, so one made
    before moto's import (a moto_server test first on an xdist worker) left every later
    `mock_aws()` test's requests going to AWS (tests/test_moto_session_order.py).
    Imported here, before any test, the handler is in every session; outside a mock it
    lets each request through untouched."""
    import moto.core.models  # noqa: F401


def _children_keep_their_bytecode() -> None:
    """The processes tests start cache their compiled modules even when this shell
    set PYTHONDONTWRITEBYTECODE: outside the checkout (tests/procs.py's
    bytecode_kept says why and where). Set here, before any test, so every child
    that inherits this environment (or a copy of it) gets it."""
    kept = bytecode_kept(os.environ)
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        if name in kept:
            os.environ[name] = kept[name]
        else:
            os.environ.pop(name, None)


_install_network_guard()
_children_keep_their_bytecode()
_local_stage_by_default()
_moto_reaches_every_session()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that share a module- or session-scoped fixture of ours (a server,
    a built package, a browser) in one xdist group named after their module, unless a
    test names its group itself. `--dist loadgroup` runs a group on one worker, so
    the fixture is set up once; every other test goes wherever a worker is free.
    Without xdist (a plain `pytest`, or `-p no:xdist`) the marks change nothing.

    It also marks `postgres` and `aws` (docs/testing.md) the tests whose id names
    Postgres or AWS (_STORE_MARKS), so `-m "not postgres and not aws"` leaves them out:
    marked by hand on a few modules, those marks missed most such tests."""
    for item in items:
        _mark_by_store(item)
        module = getattr(item, "module", None)
        info = getattr(item, "_fixtureinfo", None)
        if module is None or info is None or item.get_closest_marker("xdist_group"):
            continue
        if any(_shared_fixture(defs[-1]) for defs in info.name2fixturedefs.values() if defs):
            item.add_marker(pytest.mark.xdist_group(module.__name__))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """In-process moto undoes a cancelled transaction item by item
    (tests/moto_rollback.py: its own undo copied whole tables) and counts an SQS queue
    with one clock reading (tests/moto_sqs_counts.py: its own read the clock twice per
    message on every send). Installed before each test once moto is imported (a test
    module imports it, or a test before did), so a run that never loads moto never pays
    for it. It waited for moto's DynamoDB models to be loaded, which the first moto test
    on a worker does itself: that test ran unpatched
    (test_a_large_limited_claim_fits_each_transaction_and_keeps_the_limit[limits]: 27-44 s
    first, 11-15 s after another had loaded them)."""
    if "moto" in sys.modules:
        moto_rollback.install()
        moto_sqs_counts.install()
    settle_schemas_for(item)


def settle_schemas_for(item: pytest.Item) -> None:
    """A test not marked `postgres` starts once this worker's schema thread
    (tests/pg_ahead.py) has dropped the schemas of the tests before it and made the
    next: no test that counts this process's descriptors or allocations meets its
    connections. A Postgres test does not wait: the thread works beside it."""
    pg_support = sys.modules.get("tests.pg_support")
    if pg_support is not None and item.get_closest_marker("postgres") is None:
        pg_support.settle()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` starts the `heavy` group first (tests/xdist_order.py): the
    longest unit of work, it ended the run when it was queued behind the rest."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.xdist_order import HeavyFirstScheduling

    return HeavyFirstScheduling(config, log)


# A word of a test's id (its module, its name, its parameters: tests/backends.py's
# store names) and the mark it gets: what the test needs running or emulated.
_STORE_MARKS = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "pg": "postgres",
    "dynamodb": "aws",
    "aws": "aws",
    "moto": "aws",
    "sqs": "aws",
    "lambda": "aws",
}


def _mark_by_store(item: pytest.Item) -> None:
    import re

    words = set(re.split(r"[^a-z0-9]+", item.nodeid.lower()))
    for mark in sorted({_STORE_MARKS[w] for w in words & _STORE_MARKS.keys()}):
        if item.get_closest_marker(mark) is None:
            item.add_marker(getattr(pytest.mark, mark))


def _shared_fixture(fixturedef: Any) -> bool:
    """A fixture of the test suite's own (not pytest's tmp_path_factory and the like)
    that lives longer than one test."""
    module = getattr(fixturedef.func, "__module__", "") or ""
    return fixturedef.scope in ("module", "session") and module.startswith("tests.")


if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from chalicelib.service import Service
    from local.server import Server
    from tests.apikit import Api
    from tests.webhook_receiver import Receiver


@pytest.fixture(autouse=True)
def process_state_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test leaves the process-wide handler registry and os.environ as it found
    them (tests/isolation.py): what it left is put back, and the test fails naming it.

    A handler registered by one test (tests/limit_handlers.py's `limits.slow`, with a
    concurrency limit) was met by later tests on the same xdist worker: in-process
    runtimes claimed under its limit and counted other AWS requests. Set up before
    any test's monkeypatch (aws_guard asks for it), so monkeypatch's undo runs first."""
    registry_before = isolation.snapshot(registry)
    environ_before = dict(os.environ)
    yield
    left = isolation.restore(registry, registry_before) + isolation.environ_changes(environ_before)
    if left:
        pytest.fail(
            f"{request.node.nodeid} left process-wide state behind (now put back): "
            + "; ".join(left)
            + ". Use a Registry() of the test's own and monkeypatch.setenv, or undo it.",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def aws_guard(process_state_restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[None]:
    """Fail any test that tried to reach beyond 127.0.0.0/8, even if the code under
    test swallowed the refusal (children's attempts are counted too)."""
    before = netguard.take()
    assert not before, "refused before this test started:\n" + "\n".join(before)
    yield
    after = netguard.take()
    assert not after, "this test tried to leave 127.0.0.0/8:\n" + "\n".join(after)


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """Each test leaves the root logger's handlers as it found them.

    A test that builds a runtime in this process (build_runtime calls logs.configure,
    once per process) put Spool's own handler on the root logger and left it there,
    with the `spool` level it set: 337 of 715 tests of the API, CLI, events, worker
    and metrics modules did (stop 41). Later tests on the same xdist worker then
    found it (test_logs.py's Lambda handler test failed on it in CI, stop 40), and
    what they saw depended on which test ran first. Spool's handler is taken off
    again here (logs.reset); any other handler a test adds and leaves fails it."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    if any(handler not in before for handler in root.handlers):
        logs.reset()  # configure's handler, filter and level undone
    left = [handler for handler in root.handlers if handler not in before]
    assert not left, f"this test left handlers on the root logger: {left}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mem(clock: FakeClock) -> Iterator[MemoryStore]:
    """A memory store on the test clock, for the worker's tests."""
    store = MemoryStore(clock)
    yield store
    store.close()


@pytest.fixture
def reg() -> Registry:
    """An empty registry a test fills with the handlers it needs."""
    return Registry()


@pytest.fixture
def registry_restored() -> Iterator[Registry]:
    """The process-wide registry, for a test that must register on it (a handler
    module's own `@handler`, a runtime built with SPOOL_HANDLERS): what the test
    registers is taken off again after it, and its module forgotten."""
    before = isolation.snapshot(registry)
    yield registry
    isolation.restore(registry, before)


@pytest.fixture
def handlers() -> Registry:
    registry.load((*BUILTIN_HANDLER_MODULES, DEMO_HANDLER_MODULE))
    return registry


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path) -> Iterator[object]:
    """Every backend, each fresh and empty, all on the test clock."""
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield opened


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    """The process-wide runtime app.py uses, on a real SQLite file (override for settings)."""
    from tests.apikit import installed, settings_for

    with installed(settings_for(tmp_path)) as runtime:
        yield runtime


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    """JSON requests to app.py through chalice's test client, against `rt`."""
    from chalice.test import Client

    import app as spool_app
    from tests.apikit import Api

    with Client(spool_app.app, stage_name="local") as client:
        yield Api(client)


@pytest.fixture(params=["memory", "sqlite"])
def svc(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path, handlers: Registry
) -> Iterator[Service]:
    """The service over the in-process stores (the contract suite covers the rest)."""
    from chalicelib.service import Service

    with open_backend(request.param, clock, tmp_path, request) as store:
        yield Service(store, handlers)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a loopback port, released and shut when the test ends (so a
    test that left it hanging a request does not hold the teardown)."""
    from tests.webhook_receiver import Receiver

    receiver = Receiver().up()
    yield receiver
    receiver.released.set()
    receiver.down()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """app.py behind `spool serve`'s server on a fresh SQLite file, no worker
    (tests.served.served); a module that needs another server defines its own."""
    from tests.served import served

    with served(tmp_path) as running:
        yield running


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Databases of a test's own are dropped on a thread (tests/pg_support.py's
    drop_database_later); the session ends once they are gone."""
    pg_support = sys.modules.get("tests.pg_support")
    if pg_support is not None:
        pg_support.drops_finished()
