"""The handler registry: registration, validation at enqueue, SPOOL_HANDLERS loading."""

from __future__ import annotations

import enum
import functools
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.config import Settings
from chalicelib.errors import Misconfigured, UnknownJobType, ValidationFailed
from chalicelib.handlers import DEFAULT_TIMEOUT, JobContext, Registry, registry
from chalicelib.models import Job, JobState
from chalicelib.retry import RetryPolicy
from chalicelib.runtime import load_handlers


class Email(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str
    subject: str = "hello"


def make_ctx(attempt: int = 1) -> JobContext:
    from datetime import UTC, datetime

    now = datetime(2030, 1, 1, tzinfo=UTC)
    job = Job(id="j_" + "1" * 32, type="t", run_at=now, created_at=now, updated_at=now)
    job = job.model_copy(update={"attempts": attempt, "state": JobState.RUNNING})
    return JobContext(job, deadline=time.monotonic() + 30)


def test_handler_registers_its_policy() -> None:
    reg = Registry()

    @reg.handler("mail", payload=Email, max_attempts=7, backoff=(2.0, 30.0), timeout=12)
    def send(payload: Email, ctx: JobContext) -> str:
        return payload.to

    spec = reg.get("mail")
    assert spec.func is send
    assert spec.payload_model is Email
    assert spec.retry == RetryPolicy(max_attempts=7, base=2.0, cap=30.0)
    assert spec.timeout == 12
    assert spec.takes_context
    assert reg.types() == ["mail"]
    assert reg.max_timeout() == 12


def test_defaults_and_policy_objects() -> None:
    reg = Registry()
    policy = RetryPolicy(max_attempts=2, base=0.1, cap=1)

    @reg.handler("a")
    def a(payload: dict[str, Any]) -> None: ...

    @reg.handler("b", backoff=policy, queue="slow", priority=4)
    def b(payload: dict[str, Any]) -> None: ...

    assert reg.get("a").retry == RetryPolicy()
    assert reg.get("a").timeout == DEFAULT_TIMEOUT
    assert not reg.get("a").takes_context
    assert reg.get("b").retry is policy
    assert (reg.get("b").queue, reg.get("b").priority) == ("slow", 4)
    assert Registry().max_timeout() == DEFAULT_TIMEOUT


def test_max_attempts_overrides_the_policy_but_keeps_its_backoff() -> None:
    reg = Registry()

    @reg.handler("x", backoff=RetryPolicy(max_attempts=9, base=3, cap=4), max_attempts=2)
    def x(payload: dict[str, Any]) -> None: ...

    assert reg.get("x").retry == RetryPolicy(max_attempts=2, base=3, cap=4)


def test_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError):
        Registry().handler("t", timeout=0)


@pytest.mark.parametrize(
    ("declared", "complaint"),
    [
        ({"priority": "high"}, "priority='high'"),  # crashed every worker that claimed it
        ({"priority": 10**30}, "an integer from -1000 to 1000"),  # every enqueue a 500
        ({"priority": 1001}, "an integer from -1000 to 1000"),  # the API refuses it
        ({"priority": True}, "priority=True"),
        ({"payload": dict}, "a pydantic model class"),  # every enqueue a 500
        ({"payload": Email(to="x")}, "a pydantic model class"),
        ({"queue": "bad queue name!"}, "queue='bad queue name!'"),
        ({"queue": ""}, "a queue name is"),
    ],
)
def test_a_declaration_the_api_would_refuse_is_refused_at_registration(
    declared: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as refused:
        Registry().handler("t", **declared)
    assert "handler 't'" in str(refused.value)


@pytest.mark.parametrize("type_", ["has space/slash", "", "x" * 65, "é", "trailing\n"])
def test_a_type_no_client_could_name_is_refused(type_: str) -> None:
    with pytest.raises(ValueError, match="a job type is 1-64 of"):
        Registry().handler(type_)


def _no_args() -> None: ...


def _three(payload: Any, ctx: Any, extra: Any) -> None: ...


async def _async(payload: Any) -> None: ...


def _gen(payload: Any) -> Any:
    yield payload


@pytest.mark.parametrize(
    ("func", "complaint"),
    [
        (_no_args, "cannot be called as f(payload) or f(payload, ctx)"),
        (_three, "cannot be called as f(payload, ctx)"),
        (_async, "an async function"),
        (_gen, "a generator function"),
    ],
)
def test_a_function_the_worker_cannot_call_for_a_result_is_refused(
    func: Any, complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        Registry().handler("t")(func)


def test_keyword_only_options_do_not_make_a_handler_take_the_context() -> None:
    """`def f(payload, *, verbose=False)` was called f(payload, ctx): a TypeError at
    every attempt. Only positional parameters decide."""
    reg = Registry()

    @reg.handler("kw")
    def kw(payload: dict[str, Any], *, verbose: bool = False) -> str:
        return "ran"

    @reg.handler("both")
    def both(payload: dict[str, Any], ctx: JobContext, *, verbose: bool = False) -> str:
        return "ran"

    assert (reg.get("kw").takes_context, reg.get("both").takes_context) == (False, True)


def test_a_wrapper_without_functools_wraps_gets_the_context_to_pass_on() -> None:
    """`def wrapper(*args, **kwargs)` says nothing of what it wraps: it is given both,
    as before registration checked signatures (a handler taking ctx kept working)."""
    reg = Registry()

    def logged(func: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return wrapper

    @reg.handler("wrapped")
    @logged
    def wrapped(payload: dict[str, Any], ctx: JobContext) -> int:
        return ctx.attempt

    spec = reg.get("wrapped")
    assert spec.takes_context is True
    assert spec.call({}, make_ctx(attempt=2)) == 2


class Pri(enum.IntEnum):
    HIGH = 10


def test_an_int_enum_priority_is_an_integer() -> None:
    reg = Registry()
    reg.handler("enum", priority=Pri.HIGH)(lambda payload: None)
    assert reg.get("enum").priority == 10 and type(reg.get("enum").priority) is int


@pytest.mark.parametrize(
    ("declared", "complaint"),
    [
        ({"admit": 5}, "admit=5: a function"),  # every enqueue answered 500
        ({"max_attempts": 2.5}, "max_attempts=2.5: a whole number"),
        ({"timeout": "5"}, "timeout must be a positive"),  # a raw TypeError before
        ({"timeout": True}, "timeout must be a positive"),
    ],
)
def test_other_declarations_no_job_could_run_under(
    declared: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as refused:
        Registry().handler("t", **declared)
    assert "handler 't'" in str(refused.value)


class _AsyncCallable:
    async def __call__(self, payload: Any) -> None: ...


def test_an_object_with_an_async_call_is_refused() -> None:
    with pytest.raises(ValueError, match="an async function"):
        Registry().handler("t")(_AsyncCallable())


def test_registering_a_spec_directly_is_checked_as_the_decorator_is() -> None:
    """registry.register(HandlerSpec(...)) skipped every check: priority 5000 stored,
    a one-argument function called with two."""
    from chalicelib.handlers import HandlerSpec

    def one(payload: Any) -> None: ...

    base: dict[str, Any] = {"type": "t", "func": one, "payload_model": None, "retry": RetryPolicy()}
    base |= {"timeout": 1.0, "queue": "default", "admit": None, "limit": None}
    with pytest.raises(ValueError, match="priority=5000"):
        Registry().register(HandlerSpec(**base, priority=5000, takes_context=False))
    with pytest.raises(ValueError, match="cannot be called as f\\(payload, ctx\\)"):
        Registry().register(HandlerSpec(**base, priority=0, takes_context=True))


def test_unknown_type_names_the_known_ones() -> None:
    reg = Registry()

    @reg.handler("known")
    def known(payload: dict[str, Any]) -> None: ...

    with pytest.raises(UnknownJobType) as info:
        reg.get("nope")
    assert info.value.details == {"type": "nope", "known": ["known"]}
    assert info.value.status == 422


def test_validate_normalizes_and_refuses_bad_payloads() -> None:
    reg = Registry()

    @reg.handler("mail", payload=Email)
    def send(payload: Email) -> None: ...

    spec = reg.get("mail")
    assert spec.validate({"to": "a@b.c"}) == {"to": "a@b.c", "subject": "hello"}
    with pytest.raises(ValidationFailed) as info:
        spec.validate({"subject": "no recipient", "extra": 1})
    locs = sorted(tuple(e["loc"]) for e in info.value.details["errors"])
    assert locs == [("extra",), ("to",)]
    with pytest.raises(ValidationFailed):
        spec.validate(["not", "an", "object"])


def test_untyped_handlers_still_need_an_object() -> None:
    reg = Registry()

    @reg.handler("raw")
    def raw(payload: dict[str, Any]) -> None: ...

    assert reg.get("raw").validate({"any": [1]}) == {"any": [1]}
    with pytest.raises(ValidationFailed):
        reg.get("raw").validate("text")


def test_parse_and_call_hand_the_handler_a_typed_model() -> None:
    reg = Registry()
    got: list[Any] = []

    @reg.handler("mail", payload=Email)
    def send(payload: Email, ctx: JobContext) -> str:
        got.append((payload, ctx.attempt))
        return payload.subject

    spec = reg.get("mail")
    assert spec.call(spec.parse({"to": "x", "subject": "s"}), make_ctx(3)) == "s"
    assert got == [(Email(to="x", subject="s"), 3)]


def test_demo_handlers(handlers: Registry) -> None:
    echo, sleep, fail = handlers.get("echo"), handlers.get("sleep"), handlers.get("fail")
    assert echo.call(echo.parse({"a": [1]}), make_ctx()) == {"a": [1]}
    assert sleep.call(sleep.parse({"seconds": 0}), make_ctx()) == {"slept": 0}
    with pytest.raises(ValidationFailed):
        sleep.validate({"seconds": -1})
    twice = fail.parse({"times": 2})
    with pytest.raises(RuntimeError):
        fail.call(twice, make_ctx(2))
    assert fail.call(twice, make_ctx(3)) == {"succeeded_on_attempt": 3}
    with pytest.raises(RuntimeError):
        fail.call(fail.parse({"always": True}), make_ctx(99))


def test_spool_handlers_modules_are_imported_and_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_restored: Registry
) -> None:
    name = f"user_handlers_{uuid.uuid4().hex[:8]}"
    job_type = f"user.{name}"
    (tmp_path / f"{name}.py").write_text(
        "from chalicelib.handlers import handler\n"
        f"@handler({job_type!r}, max_attempts=2)\n"
        "def run(payload):\n"
        "    return 'user code'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings.from_env({"SPOOL_HANDLERS": f" {name} , chalicelib.builtin.demo"})
    assert settings.handlers == (name, "chalicelib.builtin.demo")
    load_handlers(registry, settings)
    spec = registry.get(job_type)
    assert spec.retry.max_attempts == 2
    assert spec.func({}) == "user code"
    assert "echo" in registry.types()
    load_handlers(registry, settings)  # loading twice is harmless


def test_missing_handler_module_fails_loudly() -> None:
    with pytest.raises(ModuleNotFoundError):
        Registry().load(["no_such_module_for_spool_tests"])


class Aliased(BaseModel):
    """A payload field whose JSON name is a Python keyword, as send_email's "from"."""

    model_config = ConfigDict(extra="forbid")
    sender: str = Field(alias="from")
    note: str = "none"


def test_a_payload_is_stored_by_its_json_names_and_reads_back() -> None:
    """Stored by field name, http_request's "json" read back from /status as "json_body",
    and a model without populate_by_name could not read its own stored payload."""
    reg = Registry()

    @reg.handler("aliased", payload=Aliased)
    def aliased(payload: Aliased) -> str:
        return payload.sender

    spec = reg.get("aliased")
    stored = spec.validate({"from": "ops@example.com"})
    assert stored == {"from": "ops@example.com", "note": "none"}
    assert Aliased.model_validate(stored).sender == "ops@example.com"


def test_http_requests_json_field_is_stored_as_json() -> None:
    from chalicelib.builtin.http_request import HttpRequestPayload

    reg = Registry()
    reg.handler("http_request", payload=HttpRequestPayload)(lambda payload: None)
    stored = reg.get("http_request").validate(
        {"url": "https://example.com/hook", "method": "POST", "json": {"a": 1}}
    )
    assert stored["json"] == {"a": 1} and "json_body" not in stored


def test_two_functions_under_one_type_are_refused_naming_both() -> None:
    """Which of two same-named handlers ran used to depend on SPOOL_HANDLERS' order."""
    target = Registry()

    @target.handler("resize")
    def resize_fast(payload: dict[str, Any]) -> str:
        return "fast"

    with pytest.raises(ValueError) as refused:

        @target.handler("resize")
        def resize_slow(payload: dict[str, Any]) -> str:
            return "slow"

    message = str(refused.value)
    assert "'resize' is registered twice" in message
    assert "resize_fast" in message and "resize_slow" in message
    assert target.get("resize").func({}) == "fast"  # the first stays, nothing replaced


def test_a_pasted_copy_under_the_same_name_and_type_is_refused() -> None:
    """Two definitions of `a` in one module, both for "dup": the second replaced the
    first without a word, since both were module.a."""
    target = Registry()
    namespace: dict[str, Any] = {"target": target, "__name__": "jobs"}
    source = (
        "@target.handler('dup')\n"
        "def a(payload):\n"
        "    return 1\n"
        "\n"
        "@target.handler('dup')\n"
        "def a(payload):\n"
        "    return 2\n"
    )
    with pytest.raises(ValueError, match=r"by jobs\.a \(line 1\) and by jobs\.a \(line 5\)"):
        exec(compile(source, "jobs.py", "exec"), namespace)
    assert target.get("dup").func({}) == 1


def test_the_same_function_registered_again_is_no_conflict() -> None:
    """A module imported twice (or reloaded) registers the same function again."""
    target = Registry()

    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    target.handler("echo")(echo)
    target.handler("echo", timeout=5.0)(echo)
    assert target.get("echo").timeout == 5.0


TARGET = Registry()


def test_handler_modules_that_take_one_type_twice_stop_start_up_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import ConfigError

    global TARGET
    TARGET = Registry()
    stem = f"dup_{uuid.uuid4().hex[:8]}"
    for n in (1, 2):
        (tmp_path / f"{stem}_{n}.py").write_text(
            "from tests import test_handlers as here\n"
            f"@here.TARGET.handler('resize')\ndef resize_{n}(payload): return {n}\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings.from_env({"SPOOL_HANDLERS": f"{stem}_1,{stem}_2"})
    with pytest.raises(ConfigError) as refused:
        load_handlers(TARGET, settings)
    message = str(refused.value)
    assert f"importing '{stem}_2' failed" in message
    assert f"{stem}_1.resize_1 and by {stem}_2.resize_2" in message
    assert "PYTHONPATH" not in message  # it was found: the path is not the problem


@pytest.mark.parametrize(
    ("body", "said", "not_said"),
    [
        # Found, but what it imports is missing: the advice is to install that.
        (
            "import no_such_dependency_xyz\n",
            "it imports 'no_such_dependency_xyz', which cannot be imported",
            "PYTHONPATH",
        ),
        # sys.exit() at import used to end the command with the module unnamed.
        ("import sys\nsys.exit('bye')\n", "failed (SystemExit: bye)", "PYTHONPATH"),
        # A name its module lacks: no advice to install `os`, or on where modules are.
        ("from os import notthere\n", "failed (ImportError: cannot import name", "install"),
        ("from . import sibling\n", "failed (ImportError: attempted relative import", "PYTHONPATH"),
    ],
)
def test_a_handler_module_that_fails_to_import_is_named_with_the_right_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, said: str, not_said: str
) -> None:
    from chalicelib.config import ConfigError

    stem = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{stem}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings.from_env({"SPOOL_HANDLERS": stem})
    with pytest.raises(ConfigError) as refused:
        load_handlers(Registry(), settings)
    message = str(refused.value)
    assert f"SPOOL_HANDLERS: importing '{stem}' failed" in message
    assert said in message and not_said not in message


def test_a_handler_module_that_is_not_there_is_still_told_where_modules_are_looked_for() -> None:
    from chalicelib.config import ConfigError

    settings = Settings.from_env({"SPOOL_HANDLERS": "no_such_pkg_xyz.jobs"})
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_pkg_xyz\.jobs'.*PYTHONPATH"):
        load_handlers(Registry(), settings)


RELOADED = Registry()


def test_a_reloaded_module_replaces_its_handlers_even_after_an_edit_moved_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pasted copy is refused (two definitions in one run of the module); a reload is
    another run, so the edited function replaces the old one."""
    import importlib
    import sys

    global RELOADED
    RELOADED = Registry()
    stem = f"reloaded_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{stem}.py"
    body = (
        "from tests import test_handlers as here\n"
        "@here.RELOADED.handler('r')\n"
        "def r(p): return {n}\n"
    )
    path.write_text(body.format(n=1))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(stem)
    try:
        assert RELOADED.get("r").func({}) == 1
        path.write_text("# a line above moves the function down\n" + body.format(n=2))
        importlib.invalidate_caches()
        module = importlib.reload(module)
        assert RELOADED.get("r").func({}) == 2
    finally:
        sys.modules.pop(stem, None)


def test_a_pasted_copy_under_a_wrapping_decorator_is_refused() -> None:
    """The wrapper's code is one for both copies: the lines compared are the wrapped
    functions' (functools.wraps), which differ."""
    target = Registry()
    namespace: dict[str, Any] = {"target": target, "__name__": "jobs", "functools": functools}
    source = (
        "def traced(f):\n"
        "    @functools.wraps(f)\n"
        "    def wrapper(*a, **k):\n"
        "        return f(*a, **k)\n"
        "    return wrapper\n"
        "@target.handler('dupw')\n"
        "@traced\n"
        "def job(payload):\n"
        "    return 1\n"
        "@target.handler('dupw')\n"
        "@traced\n"
        "def job(payload):\n"
        "    return 2\n"
    )
    with pytest.raises(ValueError, match="registered twice"):
        exec(compile(source, "jobs.py", "exec"), namespace)


@pytest.mark.parametrize("answer", [False, True, 0, "no"])
def test_an_admit_check_that_returns_a_value_refuses_the_job_naming_the_handler(
    answer: object,
) -> None:
    """Was: `admit=lambda payload, tenant: tenant == "acme"` looked like a yes/no check,
    but what it returned was ignored and every tenant's job admitted."""
    reg = Registry()
    # Deliberately ill-typed (admit returns a value): what the registry does at run time.
    reg.handler("guarded", admit=lambda payload, tenant: answer)(lambda payload: None)  # type: ignore[arg-type]
    with pytest.raises(Misconfigured) as refused:
        reg.get("guarded").validate({}, tenant="other")
    assert f"the 'guarded' handler's admit check returned {answer!r}" in str(refused.value)
    assert "raise ValueError" in str(refused.value)
    assert refused.value.status == 503


def test_an_admit_check_returning_none_admits() -> None:
    reg = Registry()
    reg.handler("guarded", admit=lambda payload, tenant: None)(lambda payload: None)
    assert reg.get("guarded").validate({"x": 1}, tenant="acme") == {"x": 1}
