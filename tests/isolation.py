"""What one test may not leave to the next in its pytest process: handlers in the
process-wide registry, and changes to os.environ.

A test that registered a handler on `chalicelib.handlers.registry` (a runtime built
with SPOOL_HANDLERS naming a test module, a handler module imported for a constant,
a spec registered by hand and not taken off) or set an environment variable without
monkeypatch changed every later test on the same pytest-xdist worker: a type with a
concurrency limit in the registry made every in-process runtime claim under a limit,
so AWS request counts and the check that the built-ins declare no limits failed, and
only when the files happened to share a worker (`pytest -n 3`, not CI's loadgroup).
conftest.py's `process_state_restored` snapshots both before each test, puts them
back after it, and fails the test that changed them, by name.

Kept cheap (the suite runs ~8,000 tests): copies of a few small dicts per test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.handlers import HandlerSpec, Registry
from chalicelib.runtime import BUILTIN_HANDLER_MODULES, DEMO_HANDLER_MODULE

# Modules whose handlers the registry itself registers on first use (Registry.defer):
# a test that asks for `send_email` imports chalicelib.builtin.email, by design.
OWN_MODULES = frozenset({*BUILTIN_HANDLER_MODULES, DEMO_HANDLER_MODULE})
# Set by others than the test, whichever test is running: pytest names the running
# test and phase in PYTEST_CURRENT_TEST, and chalice's Chalice() appends itself to
# AWS_EXECUTION_ENV when an app is made (the first `import app` of the process, in
# whichever test asks first). Neither reported nor put back.
SET_BY_OTHERS = frozenset({"PYTEST_CURRENT_TEST", "AWS_EXECUTION_ENV"})


@dataclass(frozen=True)
class RegistryState:
    specs: dict[str, HandlerSpec]
    loaded: frozenset[str]
    deferred: dict[str, str]
    runs: dict[str, object]
    modules: frozenset[str]  # sys.modules's names


def snapshot(registry: Registry) -> RegistryState:
    return RegistryState(
        dict(registry._specs),
        frozenset(registry._loaded),
        dict(registry._deferred),
        dict(registry._runs),
        frozenset(sys.modules),
    )


def _own(spec: HandlerSpec) -> bool:
    return getattr(spec.func, "__module__", None) in OWN_MODULES


def restore(registry: Registry, before: RegistryState) -> list[str]:
    """Put the registry back as `before` had it, keeping only the built-in and demo
    handlers loaded since (the registry's own lazy loading); return what was left."""
    left: list[str] = []
    for type_, spec in list(registry._specs.items()):
        old = before.specs.get(type_)
        if old is spec or (old is None and _own(spec)):
            continue
        module = getattr(spec.func, "__module__", "?")
        left.append(f"handler {type_!r} (registered by {module})")
        if old is None:
            del registry._specs[type_]
        else:
            registry._specs[type_] = old
        if type_ in before.runs:
            registry._runs[type_] = before.runs[type_]
        else:
            registry._runs.pop(type_, None)
        _forget(module, before)
    for type_, spec in before.specs.items():
        if type_ not in registry._specs:
            left.append(f"handler {type_!r} taken out of the registry")
            registry._specs[type_] = spec
            registry._runs[type_] = before.runs.get(type_)
    for type_ in [t for t in registry._runs if t not in registry._specs]:
        registry._runs.pop(type_)  # a spec taken off by hand leaves its run behind
    for module in registry._loaded - before.loaded - OWN_MODULES:
        left.append(f"handler module {module!r} marked loaded")
        registry._loaded.discard(module)
        _forget(module, before)
    for type_, module in list(registry._deferred.items()):
        if before.deferred.get(type_) != module and module not in OWN_MODULES:
            left.append(f"type {type_!r} deferred to {module!r}")
            del registry._deferred[type_]
    return sorted(set(left))


def _forget(module: str, before: RegistryState) -> None:
    """A module the test imported goes too, so a later import registers it again
    (importlib would hand back the module and run none of its decorators)."""
    if module not in before.modules and module not in OWN_MODULES:
        sys.modules.pop(module, None)


def environ_changes(before: Mapping[str, str]) -> list[str]:
    """Put os.environ back as `before` had it; return the variables that differed
    (names only: a value may be a secret)."""
    now = dict(os.environ)
    changed = sorted(
        k
        for k in before.keys() | now.keys()
        if before.get(k) != now.get(k) and k not in SET_BY_OTHERS
    )
    said = []
    for key in changed:
        if key not in now:
            said.append(f"environment variable {key} unset")
            os.environ[key] = before[key]
        elif key not in before:
            said.append(f"environment variable {key} set")
            del os.environ[key]
        else:
            said.append(f"environment variable {key} changed")
            os.environ[key] = before[key]
    return said
