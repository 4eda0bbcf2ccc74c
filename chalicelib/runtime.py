"""Wire settings, store, handlers and service together once per process.

app.py and the command line both start here, so the deployed path and the
local path are built the same way.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib import handler_check, handler_modules, logs
from chalicelib.clock import Clock
from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import DEFAULT_TIMEOUT, HandlerSpec, Registry, registry, unknown_type
from chalicelib.service import Service
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore

log = logging.getLogger("spool.worker")

if TYPE_CHECKING:
    from chalicelib.api.metrics import Metrics
    from chalicelib.limits import ClaimPolicy
    from chalicelib.middleware import Middleware
    from chalicelib.store_outage import Outage
    from chalicelib.worker import Worker

# Each built-in job type and the module that registers it. The modules are imported
# when their type is first asked for (Registry.defer): a cold start that answers
# GET /status or enqueues one type imports none or one of them.
# tests/test_cold_start.py checks this table against what the modules register.
BUILTIN_HANDLERS = {
    "send_email": "chalicelib.builtin.email",
    "resize_image": "chalicelib.builtin.images",
    "http_request": "chalicelib.builtin.http_request",
}
BUILTIN_HANDLER_MODULES = tuple(dict.fromkeys(BUILTIN_HANDLERS.values()))
# echo, sleep, fail: offered only where SPOOL_DEMO_HANDLERS turns them on
# (`spool serve` on a laptop, `make run`, the local Chalice stage, tests).
DEMO_HANDLER_MODULE = "chalicelib.builtin.demo"
DEMO_HANDLERS = dict.fromkeys(("echo", "sleep", "fail"), DEMO_HANDLER_MODULE)
_metrics_lock = threading.Lock()


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    registry: Registry
    service: Service
    _metrics: Metrics | None = field(default=None, repr=False, compare=False)
    _outage: Outage | None = field(default=None, repr=False, compare=False)

    def outage(self) -> Outage:
        """This process's view of a store outage, shared by its workers and `spool
        serve`'s emulated one, so an outage is said once, not once per loop."""
        with _metrics_lock:
            if self._outage is None:
                from chalicelib.store_outage import Outage

                self._outage = Outage(logging.getLogger("spool.worker"), "the worker")
            return self._outage

    def metrics(self) -> Metrics:
        """The process's Prometheus metrics, built on first use (prometheus_client loads then)."""
        with _metrics_lock:
            if self._metrics is None:
                from chalicelib.api.metrics import Metrics

                queues = {spec.queue for spec in self.registry.loaded_specs()}
                self._metrics = Metrics(self.store, self.settings, queues)
            return self._metrics

    def worker(
        self,
        concurrency: int | None = None,
        middleware: tuple[Middleware, ...] = (),
        metrics: bool = True,
        start_marks: bool = True,
    ) -> Worker:
        """A worker whose attempts also feed the metrics' histograms and the job-event logs.

        metrics=False leaves the histograms out: a `spool worker` that neither serves
        nor pushes metrics would fill them for nobody, and importing prometheus_client
        is a good part of its start-up."""
        # Imported here: the API function never runs a worker (its thread pool and
        # concurrent.futures stay out of the cold start).
        from chalicelib import attempt_record
        from chalicelib.job_events import JobEvents
        from chalicelib.worker import Worker, WorkerConfig

        config = WorkerConfig(
            concurrency=concurrency or self.settings.concurrency,
            lease_seconds=self.settings.lease_seconds,
            queues=self.settings.queues,
            # From this runtime's settings, not the process environment, so a runtime
            # built with other settings (spool serve, tests) gets its own.
            traceback_bytes=attempt_record.traceback_bytes(self.settings.extra),
            heartbeat_seconds=attempt_record.heartbeat_seconds(self.settings.extra),
            policy=self._claim_policy(),
            start_marks=start_marks,
        )
        # JobEvents: one log line per attempt's start and applied outcome (docs/operations.md).
        reporting = (self.metrics().middleware,) if metrics else ()
        middleware = (*reporting, JobEvents(), *middleware)
        worker = Worker(self.store, self.registry, config, middleware=middleware)
        worker.outage = self.outage()
        return worker

    def _claim_policy(self) -> ClaimPolicy | None:
        """The workers' limits and fair turns; a malformed setting is a ConfigError, so
        `spool worker` says it in one line instead of as an unexpected error."""
        from chalicelib.limit_settings import claim_policy

        try:
            policy = claim_policy(self.settings, self.registry.limits())
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        known = self.registry.known_types()
        for limit in policy.limits if policy is not None else ():
            if limit.scope == "type" and limit.name not in known:
                # Not refused: another process may run that type. A typo, though,
                # would leave the real type unlimited without a word.
                log.warning(
                    "SPOOL_LIMITS limits job type %r, which no handler here registers"
                    " (known: %s): check its spelling",
                    limit.name,
                    ", ".join(sorted(known)) or "none",
                )
        return policy

    def with_settings(self, settings: Settings) -> Runtime:
        """The same store under changed settings (`spool serve` turning on its dev key
        and demo handlers), with the handlers those settings offer."""
        logs.remember(settings)  # its keys are masked in the logs too
        load_handlers(registry, settings)
        handlers = offered(settings)
        handler_check.check(handlers, settings)
        return Runtime(settings, self.store, handlers, Service(self.store, handlers, settings))

    def close(self) -> None:
        self.store.close()


class HandlerView(Registry):
    """The process-wide registry as one runtime offers it.

    Handlers register into one process-global registry at import, so once a
    test or another runtime in the process has imported the demo module its
    handlers are there for good. A runtime whose settings leave them off must
    still not offer them: this view hides handlers defined in `hidden`
    modules from lookups, listings and /openapi.json; registering through it
    registers process-wide, as the decorators do.
    """

    def __init__(self, base: Registry, hidden: frozenset[str]) -> None:
        super().__init__()
        self._base = base
        self._hidden = hidden

    def _offered(self, spec: HandlerSpec) -> bool:
        return getattr(spec.func, "__module__", None) not in self._hidden

    def register(self, spec: HandlerSpec) -> None:
        self._base.register(spec)

    def load(self, modules: Iterable[str]) -> None:
        self._base.load(modules)

    def defer(self, modules_by_type: Mapping[str, str]) -> None:
        self._base.defer(modules_by_type)

    def loaded_specs(self) -> list[HandlerSpec]:
        return [spec for spec in self._base.loaded_specs() if self._offered(spec)]

    def known_types(self, hidden: frozenset[str] = frozenset()) -> set[str]:
        return self._base.known_types(self._hidden | hidden)

    def get(self, type_: str) -> HandlerSpec:
        spec = self._base.get(type_)
        if not self._offered(spec):
            raise unknown_type(type_, self.types())
        return spec

    def types(self) -> list[str]:
        return [spec.type for spec in self.specs()]

    def specs(self) -> list[HandlerSpec]:
        return [spec for spec in self._base.specs() if self._offered(spec)]

    def max_timeout(self) -> float:
        return max((s.timeout for s in self.specs()), default=DEFAULT_TIMEOUT)


def demo_enabled(settings: Settings) -> bool:
    return settings.demo_handlers or DEMO_HANDLER_MODULE in settings.handlers


class HandlerModuleError(ConfigError):
    """A SPOOL_HANDLERS module that cannot be imported: the message says the fix (the
    module, or where modules are found), so no "fix the variable" goes after it."""


def load_handlers(target: Registry, settings: Settings) -> Registry:
    """Import the built-in handlers, the demo ones if enabled, then SPOOL_HANDLERS.

    A SPOOL_HANDLERS module that cannot be imported is a ConfigError naming it
    and where modules are looked for, not a traceback from importlib.
    """
    handler_modules.check(settings.handlers)  # a file path or a list: imports none
    target.defer(BUILTIN_HANDLERS)
    if demo_enabled(settings):
        target.defer(DEMO_HANDLERS)
    for name in settings.handlers:
        fresh = name not in sys.modules  # one an earlier entry imported registered there
        before = (target.registrations, registry.registrations)
        try:
            target.load((name,))
        except ModuleNotFoundError as exc:
            if not _is_the_module(exc, name):  # found; what it imports is missing
                raise HandlerModuleError(
                    f"SPOOL_HANDLERS: importing {name!r} failed: it imports {exc.name!r}, "
                    f"which cannot be imported ({type(exc).__name__}: {exc}). Install it "
                    "where the command runs (its virtualenv, the Lambda package)"
                ) from exc
            raise HandlerModuleError(
                f"SPOOL_HANDLERS: cannot import {name!r} ({type(exc).__name__}: {exc}). "
                + (
                    _shadowed(name)
                    or "Handler modules are imported like any Python module: from the "
                    "working directory (the `spool` command adds it) or a directory on "
                    "PYTHONPATH; see docs/handlers.md"
                )
            ) from exc
        except (Exception, SystemExit) as exc:  # found, but failed while importing
            # (an ImportError too: `from x import missing_name`, a relative import)
            raise HandlerModuleError(
                f"SPOOL_HANDLERS: importing {name!r} failed ({type(exc).__name__}: {exc})"
                f"{_where_in_module(exc, name)}. Fix the module; see docs/handlers.md"
            ) from exc
        if fresh and before == (target.registrations, registry.registrations):
            _warn_registered_nothing(name)
    return target


def _warn_registered_nothing(name: str) -> None:
    """A SPOOL_HANDLERS module whose import registered no handler: its functions are no
    job type (a `@handler` left out, or the handlers in a module it does not import),
    and the start went on without a word; its jobs were then refused at enqueue, or
    buried by a worker, as a type no handler has. A warning, not a refusal: a module may
    be listed for what else its import does."""
    log.warning(
        "SPOOL_HANDLERS: importing %r registered no handler: decorate each job function "
        "with @handler('TYPE') in it, or name the module that does; see docs/handlers.md",
        name,
    )


def _shadowed(name: str) -> str:
    """Why `pkg.mod` is not found although ./pkg/mod.py is there, or "": `pkg` was
    already imported from elsewhere (an installed checkout's `chalicelib`, which the
    `spool` command imports before it looks at SPOOL_HANDLERS), so the working
    directory's `pkg` is never read. The error said only to look in the working
    directory, where the file was."""
    package, _, module = name.partition(".")
    loaded = sys.modules.get(package)
    if not module or loaded is None:
        return ""
    try:
        here = os.path.join(os.getcwd(), package)
    except FileNotFoundError:
        return ""
    relative = os.path.join(here, *module.split("."))
    if not (os.path.exists(relative + ".py") or os.path.isdir(relative)):
        return ""
    paths = [os.path.realpath(p) for p in getattr(loaded, "__path__", [])]
    if os.path.realpath(here) in paths:
        return ""
    where = ", ".join(getattr(loaded, "__path__", [])) or "elsewhere"
    return (
        f"{package!r} is imported from {where}, not {here}, so the working directory's "
        f"copy is not read: run from the checkout this environment's Spool was "
        f"installed from, or give the module a package of its own (myapp/jobs.py, "
        f"SPOOL_HANDLERS=myapp.jobs); see docs/handlers.md"
    )


def _where_in_module(exc: BaseException, name: str) -> str:
    """` at FILE, line N`: the module's own line the failure came through (the deepest
    one), so "KeyError: 'BILLING_KEY'" says which line of which file to fix. Empty when
    no frame of the module is in the traceback (a SyntaxError names its own line)."""
    found = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__")
        if isinstance(module, str) and (module == name or module.startswith(name + ".")):
            found = (frame.f_code.co_filename, line)
    if found is None:
        return ""
    path = Path(found[0])
    try:
        shown = str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):  # outside the working directory (or it is gone)
        shown = str(path)
    return f" at {shown}, line {found[1]}"


def _is_the_module(exc: ModuleNotFoundError, name: str) -> bool:
    """Whether the module not found is `name` itself (or a package on its path),
    rather than something `name` imports."""
    missing = exc.name
    return missing is None or missing == name or name.startswith(missing + ".")


def offered(settings: Settings, base: Registry = registry) -> Registry:
    """The handlers a runtime with these settings offers (see HandlerView)."""
    hidden = frozenset() if demo_enabled(settings) else frozenset({DEMO_HANDLER_MODULE})
    return HandlerView(base, hidden)


def build_runtime(settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
    settings = settings or Settings.from_env()
    logs.configure(settings)  # once per process; first, so start-up lines are formatted too
    load_handlers(registry, settings)  # before the store: a bad module opens nothing
    logs.keep_on_root()  # a module's logging.basicConfig(force=True) took Spool's handler
    handlers = offered(settings)
    handler_check.check(handlers, settings)
    store = open_store(settings.store_url, clock)
    return Runtime(settings, store, handlers, Service(store, handlers, settings))


_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime:
    """The process-wide runtime, built on first use (Lambda reuses it across invocations)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = build_runtime()
        return _current


def reset(runtime: Runtime | None = None) -> None:
    """Replace the process-wide runtime (tests, and the local server at start-up)."""
    global _current
    with _current_lock:
        if _current is not None and runtime is not _current:
            _current.close()
        _current = runtime
