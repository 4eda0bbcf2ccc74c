"""What the API function's first request loads: only what that request needs.

bench/cold_start.py times a cold start from the unzipped package; these tests
hold the reasons it is fast, by module, not by the clock: the built-in handler
modules (smtplib, ssl, http.client, the blob store) load when their job type is
first asked for, and the worker (its thread pool) never loads on the API path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chalicelib.handlers import HandlerSpec, Registry, registry
from chalicelib.runtime import BUILTIN_HANDLERS, DEMO_HANDLERS
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
HANDLER_MODULES = {*BUILTIN_HANDLERS.values(), *DEMO_HANDLERS.values()}

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import lambda_runner as lr
    import app

    def ask(*args):
        answer = app.app(lr.api_event(*args), lr.Context(30_000))
        assert answer["statusCode"] < 300, answer
        return json.loads(answer["body"])

    loaded = lambda: sorted(m for m in sys.modules if m.startswith("chalicelib.builtin.")
                            or m in ("chalicelib.worker", "boto3", "prometheus_client"))
    body = json.dumps({{"type": {type!r}, "payload": {payload}}})
    job = ask("POST", "/enqueue", "/enqueue", body)
    after_enqueue = loaded()
    ask("GET", "/status/" + job["id"], "/status/{{id}}")
    print(json.dumps({{"after_enqueue": after_enqueue, "after_status": loaded()}}))
    """
)


def first_requests(tmp_path: Path, type_: str, payload: str) -> dict[str, list[str]]:
    code = CHILD.format(tests=str(ROOT / "tests"), type=type_, payload=payload)
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS="lambda-runner-key-0123456789=lambda",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_SMTP_FROM="spool@example.com",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_enqueueing_one_type_imports_only_its_handler_module(tmp_path: Path) -> None:
    payload = '{"to": ["a@example.com"], "subject": "s", "text": "t"}'
    loaded = first_requests(tmp_path, "send_email", payload)
    builtins = [m for m in loaded["after_status"] if m.startswith("chalicelib.builtin.")]
    # chalicelib.builtin.email_headers is part of the email handler; setting_values (34
    # lines, standard library only) reads its settings for the admit check at enqueue.
    helpers = {"chalicelib.builtin.email_headers", "chalicelib.builtin.setting_values"}
    assert {m for m in builtins if m not in helpers} == {"chalicelib.builtin.email"}
    assert "boto3" not in loaded["after_status"]
    assert "chalicelib.worker" not in loaded["after_status"]  # the API path runs no worker


def test_a_demo_job_imports_no_built_in_handler_module(tmp_path: Path) -> None:
    loaded = first_requests(tmp_path, "echo", '{"n": 1}')
    assert [m for m in loaded["after_status"] if m.startswith("chalicelib.builtin.")] == [
        "chalicelib.builtin.demo"
    ]


def test_the_table_of_built_in_types_matches_what_the_modules_register() -> None:
    registry.load(sorted(HANDLER_MODULES))
    for type_, module in {**BUILTIN_HANDLERS, **DEMO_HANDLERS}.items():
        assert registry.get(type_).func.__module__ == module, type_
    registered = {
        spec.type for spec in registry.loaded_specs() if spec.func.__module__ in HANDLER_MODULES
    }
    assert registered == {*BUILTIN_HANDLERS, *DEMO_HANDLERS}


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _write(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(
        "from chalicelib.handlers import HandlerSpec\n"
        "from chalicelib.retry import RetryPolicy\n"
        "from tests import test_cold_start as here\n" + textwrap.dedent(body)
    )
    return name


def _spec(type_: str, origin: str) -> HandlerSpec:
    from chalicelib.handlers import HandlerSpec
    from chalicelib.retry import RetryPolicy

    def run(payload: object) -> str:
        return origin

    return HandlerSpec(type_, run, None, RetryPolicy(), 5.0, takes_context=False)


def test_a_deferred_module_loads_on_first_lookup_and_keeps_earlier_registrations(
    module_dir: Path,
) -> None:
    target = Registry()
    name = f"deferred_{module_dir.name}"
    _write(
        module_dir,
        name,
        """
        here.TARGET.register(here._spec("mail", "built-in"))
        here.TARGET.register(here._spec("other", "built-in"))
        """,
    )
    global TARGET
    TARGET = target
    target.register(_spec("mail", "user"))  # say a SPOOL_HANDLERS module's override
    target.defer({"mail": name, "other": name})
    assert name not in sys.modules
    assert target.loaded_specs()[0].func({}) == "user"
    assert target.get("other").func({}) == "built-in"  # imported now
    assert name in sys.modules
    assert target.get("mail").func({}) == "user"  # the earlier registration wins
    assert target.types() == ["mail", "other"]


def test_listing_types_imports_every_deferred_module(module_dir: Path) -> None:
    target = Registry()
    name = f"listed_{module_dir.name}"
    _write(module_dir, name, 'here.TARGET.register(here._spec("listed", "built-in"))\n')
    global TARGET
    TARGET = target
    target.defer({"listed": name})
    assert target.loaded_specs() == []
    assert target.types() == ["listed"]
    assert target.max_timeout() == 5.0


TARGET: Registry = Registry()
