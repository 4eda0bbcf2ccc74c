"""The handler registry: job types, their payload models and their retry/timeout policy.

Payloads are validated at enqueue time, so an unknown type or a bad payload is
refused before anything is stored, and parsed again for the handler, so the
handler always receives a typed model.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import importlib
import inspect
import logging
import operator
import reprlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib.config import MAX_PRIORITY, MIN_PRIORITY, QUEUE_NAME
from chalicelib.errors import (
    UNKNOWN_TYPE_FIX_START,
    Misconfigured,
    SpoolError,
    UnknownJobType,
    ValidationFailed,
)
from chalicelib.limits import Limit, Rate
from chalicelib.log_redact import redactor
from chalicelib.logs import JobLog, payload_text
from chalicelib.models import DEFAULT_QUEUE, Job, error_text, error_type_name, exception_text
from chalicelib.retry import RetryPolicy, finite
from chalicelib.validation_text import validation_details

DEFAULT_TIMEOUT = 30.0
# The longest an attempt may be given: 12 hours, the longest SQS keeps a received
# message hidden (ChangeMessageVisibility cannot reach past 12 h from receipt), so a
# longer attempt's job is delivered to a second worker while the first still runs,
# however its heartbeat extends it. Lambda bounds its own workers far lower (900 s;
# chalicelib/handler_check.py); on SQL stores leases renew, but a timeout past this
# is no timeout: a hung handler kept its thread, and its concurrency slot, for ever.
MAX_TIMEOUT = 43_200.0

_log = logging.getLogger("spool.handlers")


_CANCEL_LOCK = threading.Lock()
# How often a wait on a leased attempt's ctx.cancelled reads the lease again: a renewal
# moves its end, and a test's clock moves without waking anyone.
LEASE_RECHECK = 0.25


class LeaseCancel(threading.Event):
    """ctx.cancelled of an attempt held under a lease: set by the worker, and read as
    set once the lease has run out unrenewed (`lease_left()` <= 0).

    A renewal is refused exactly when the lease has run out, and the worker tells the
    handler then; but in an outage, or while another process holds a SQLite file's
    write lock, nothing is refused and nothing told, while the store's next claim
    reaps the job and another worker starts it beside this handler (two at once under
    concurrency 1). The worker knows when the lease ends without asking the store."""

    def __init__(self, lease_left: Callable[[], float]) -> None:
        super().__init__()
        self._lease_left = lease_left

    def is_set(self) -> bool:
        if super().is_set():
            return True
        if self._lease_left() <= 0:
            self.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            pause = min(max(self._lease_left(), 0.0), LEASE_RECHECK)
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                pause = min(pause, left)
            super().wait(pause)
        return True


@dataclass
class JobContext:
    """What a handler may know about its attempt: the job, and when to give up."""

    job: Job
    deadline: float  # time.monotonic() value after which the worker abandons the attempt
    _cancelled: threading.Event | None = field(default=None, repr=False, compare=False)
    _log: JobLog | None = field(default=None, repr=False, compare=False)
    # Seconds until the attempt's lease runs out (the worker's; see LeaseCancel).
    _lease_left: Callable[[], float] | None = field(default=None, repr=False, compare=False)

    @property
    def log(self) -> JobLog:
        """A logger bound to this job: its lines carry the job id, attempt, type, queue
        and tenant, and the last SPOOL_LOG_TAIL_LINES of them are kept with a failing
        attempt's record (`log_tail`). Made on first use, as `cancelled` is."""
        with _CANCEL_LOCK:
            if self._log is None:
                self._log = JobLog(self.job)
            return self._log

    def log_tail(self) -> tuple[str, ...]:
        """The handler's last `ctx.log` lines in this attempt, oldest first (redacted)."""
        log = self._log
        return () if log is None else log.tail()

    @property
    def cancelled(self) -> threading.Event:
        """Set when the worker abandons the attempt (timeout) or its lease has run out
        (LeaseCancel). Made on first use: most handlers never look, and an Event per
        job is a measurable cost."""
        with _CANCEL_LOCK:
            if self._cancelled is None:
                lease_left = self._lease_left
                self._cancelled = (
                    threading.Event() if lease_left is None else LeaseCancel(lease_left)
                )
            return self._cancelled

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


HandlerFunc = Callable[..., Any]
# Checks a parsed payload against what the enqueuing tenant may ask for (blob keys
# in its own namespace, URLs the SSRF policy could ever allow). Raises ValueError
# or ValidationFailed with a message for the client; the job is then refused (422).
AdmitFunc = Callable[[Any, str], None]


# The 422's details mark a refusal by a handler's admit check ("refused_by"): the job
# was well formed, and what changes the answer is the tenant or the operator's setting
# the reason names, not the arguments (local/remote_cli.py words the fix from it).
REFUSED_BY_ADMIT = "admit"


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    func: HandlerFunc
    payload_model: builtins.type[BaseModel] | None
    retry: RetryPolicy
    timeout: float
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    takes_context: bool = True
    admit: AdmitFunc | None = None
    # Held across every worker by the store's claim (chalicelib/limits.py);
    # SPOOL_LIMITS overrides them per deployment.
    limit: Limit | None = None

    def validate(self, payload: Any, tenant: str | None = None) -> dict[str, Any]:
        """Check a payload at enqueue time; return the normalized JSON to store.

        With a tenant, the handler's admission check runs too, so a payload that
        is well formed but not this tenant's to ask for is refused before storing.
        What the model or admit raises beyond a refusal is the handler's fault
        (PayloadCheck: 503 misconfigured), never the server's end.
        """
        if not isinstance(payload, dict):
            raise ValidationFailed("payload must be a JSON object", {"type": self.type})
        with PayloadCheck(self.type, payload):
            return self._checked(payload, tenant)

    def _checked(self, payload: dict[str, Any], tenant: str | None) -> dict[str, Any]:
        if self.payload_model is None:
            parsed: Any = payload
            normalized = payload
        else:
            try:
                parsed = self.payload_model.model_validate(payload)
            except ValidationError as exc:
                raise ValidationFailed(
                    f"payload does not match the {self.type!r} handler's model",
                    {"type": self.type, "errors": told_details(exc, payload)},
                ) from exc
            # By alias: the names the client sent and the docs give (http_request's
            # "json", send_email's "from"), which the model reads back at run time
            # whether or not it also takes field names (populate_by_name).
            normalized = parsed.model_dump(mode="json", by_alias=True)
        if tenant is not None and self.admit is not None:
            try:
                answer = self.admit(parsed, tenant)
            except ValidationFailed:
                raise
            except ValueError as exc:
                raise ValidationFailed(
                    f"payload refused for the {self.type!r} handler: "
                    f"{told(exception_text(exc), payload)}",
                    {"type": self.type, "refused_by": REFUSED_BY_ADMIT},
                ) from exc
            if answer is not None:
                # `admit=lambda p, tenant: tenant == "acme"` read as a yes/no check, but
                # its False was ignored and every tenant admitted. Refused, nothing
                # stored: the handler's author must raise ValueError to refuse.
                raise Misconfigured(
                    f"the {self.type!r} handler's admit check returned "
                    f"{reprlib.repr(answer)}: it must return None, and raise ValueError "
                    "to refuse a job; nothing was stored"
                )
        return normalized

    def parse(self, payload: dict[str, Any]) -> Any:
        if self.payload_model is None:
            return payload
        return self.payload_model.model_validate(payload)

    def call(self, payload: Any, ctx: JobContext) -> Any:
        if self.takes_context:
            return self.func(payload, ctx)
        return self.func(payload)


class PayloadCheck:
    """Around a handler's payload model or admit check run at enqueue: what it raises
    beyond a refusal (a SpoolError such as ValidationFailed, 422) is the handler's
    fault, answered 503 misconfigured naming the handler and the exception, and logged
    with its traceback; nothing is stored.

    BaseExceptions too: SystemExit or KeyboardInterrupt from a validator (sys.exit(), a
    library's own exception class) ended `spool serve`'s loop thread and so the whole
    server, and a TypeError or RecursionError answered a bare 500. Only a
    KeyboardInterrupt on the main thread, where Ctrl-C arrives, goes through."""

    def __init__(self, job_type: str, payload: Any = None) -> None:
        self.job_type = job_type
        self.payload = payload  # what the tenant sent: its own words come back unmasked

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, SpoolError):
            return
        if isinstance(exc, KeyboardInterrupt) and _on_main_thread():
            return  # the main thread's Ctrl-C ends the program, as ever
        _log.error("the %r handler's payload check raised", self.job_type, exc_info=exc)
        raise Misconfigured(
            f"the {self.job_type!r} handler's payload check failed "
            f"({told(_said(exc), self.payload)}): its "
            "payload model and admit check must raise ValueError to refuse a job; "
            "nothing was stored"
        ) from None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _said(exc: BaseException) -> str:
    """The exception's name and message, masked and shortened: a handler's message is
    written for its author and may be of any length."""
    text = exception_text(exc)
    if len(text) > _SAID_CHARS:
        text = f"{text[:_SAID_CHARS]}[... {len(text) - _SAID_CHARS} characters trimmed]"
    name = error_type_name(exc)  # a class made at run time may be named anything
    return error_text(text, f"{name}: ") if text else name


_SAID_CHARS = 300


def told(text: str, payload: Any) -> str:
    """A handler's words about a payload, as the tenant who sent it reads them (a 422
    or 503 at enqueue): masked by the configured secrets' values, not by shape alone.
    An admit check that raised with a setting in its message put that setting (the SMTP
    password, a SPOOL_SECRET_VARIABLES value) into the answer as it was. Values the
    tenant sent itself stay, as in the worker's record of an attempt
    (Redactor.text_beside): a `***` there would tell a guesser its guess was right."""
    return redactor.text_beside(text, lambda: payload_text(payload))


def told_details(
    exc: ValidationError, payload: Any, prefix: tuple[str | int, ...] = ()
) -> list[Any]:
    """validation_details with each message masked as told() masks it: a validator's
    ValueError is the handler author's text too."""
    details = validation_details(exc, prefix)
    for detail in details:
        detail["msg"] = told(detail["msg"], payload)
    return details


def _where(func: Callable[..., Any]) -> str:
    """module.qualname: the same after a reload, so re-registering is no conflict."""
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def _line(func: Callable[..., Any]) -> tuple[str, int] | None:
    """Where the function's code starts (under its decorators, when they use
    functools.wraps): a copy of a handler pasted below it has its name, module and
    type, but not its line."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno)


def _module_run(func: Callable[..., Any]) -> object:
    """The module's __spec__ as its code runs: importlib.reload sets a new one, so two
    definitions met in one run are a pasted copy, and in two runs a reload."""
    namespace = getattr(inspect.unwrap(func), "__globals__", None)
    return None if namespace is None else namespace.get("__spec__")


def _check_timeout_bound(type_: str, timeout: float) -> None:
    """Refuse a timeout over MAX_TIMEOUT where the handler is declared (see MAX_TIMEOUT)."""
    if timeout > MAX_TIMEOUT:
        raise ValueError(
            f"handler {type_!r}: timeout={timeout:g}s is over {MAX_TIMEOUT:g}s (12 hours), "
            "the longest SQS keeps a running job's message hidden: a longer attempt "
            "would be delivered again while it runs. Split the work into shorter jobs "
            "(each its own attempt), or give a timeout of at most 43200"
        )


def bare_decorator(decorator: str, func: object, example: str) -> str:
    """The refusal for `@handler` or `@periodic` written without its arguments: Python
    then passes the function where the job type (or schedule name) goes, and the check
    of that name printed the function's repr (`<function f at 0x...>`), naming no fix."""
    name = getattr(func, "__name__", "the function")
    return (
        f"@{decorator} above {name} has no arguments: write @{decorator}({example}), "
        "with its parentheses (docs/handlers.md)"
    )


def _check_declaration(type_: object, payload: object, queue: object, priority: object) -> int:
    """What the API would refuse from a client is refused here, at start: a job of a
    type it cannot name could never be enqueued, a payload that is not a pydantic
    model answered every enqueue 500, and a priority outside the API's range (or not
    an integer) crashed every worker that claimed the job, once per lease. Returns the
    priority as a plain int (an IntEnum member is one)."""
    where = f"handler {type_!r}"
    if not isinstance(type_, str) or not QUEUE_NAME.fullmatch(type_):
        raise ValueError(f"{where}: a job type is 1-64 of A-Z a-z 0-9 _ . : -")
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"{where}: queue={queue!r}: a queue name is 1-64 of A-Z a-z 0-9 _ . : -")
    value = whole_number(priority)
    if value is None or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where}: priority={priority!r}: an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    if payload is not None and not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise ValueError(
            f"{where}: payload={payload!r}: a pydantic model class (a BaseModel subclass)"
        )
    return value


def _policy(backoff: object, max_attempts: object) -> RetryPolicy:
    """The handler's retry policy from its backoff and max_attempts arguments.

    backoff is a RetryPolicy or a (base, cap) pair: anything else (5, "1s", a
    triple) used to be kept as the policy itself, or its extra numbers dropped,
    and the worker failed on the job's first retry instead of at start."""
    if backoff is None:
        policy = RetryPolicy()
    elif isinstance(backoff, RetryPolicy):
        policy = backoff
    elif isinstance(backoff, tuple | list) and len(backoff) == 2:
        policy = RetryPolicy(base=backoff[0], cap=backoff[1])
    else:
        raise ValueError(
            f"backoff={reprlib.repr(backoff)}: a (base, cap) pair of seconds, such as "
            "(1.0, 300.0), or a RetryPolicy"
        )
    if max_attempts is None:
        return policy
    attempts = whole_number(max_attempts)
    if attempts is None:  # 2.5 was stored as 2.5 on SQLite and 2 on Postgres
        raise ValueError(f"max_attempts={reprlib.repr(max_attempts)}: a whole number")
    return RetryPolicy(max_attempts=attempts, base=policy.base, cap=policy.cap)


def _limit(type_: str, concurrency: object, rate: object) -> Limit | None:
    """The handler's concurrency and rate limit; a refusal names the argument and its
    value (Limit's and Rate's own messages name neither the handler nor the argument)."""
    if concurrency is None and rate is None:
        return None
    parsed = None
    if rate is not None:
        try:
            parsed = Rate.parse(rate)  # type: ignore[arg-type]
        except ValueError as exc:
            said = str(exc)  # some of Rate's messages quote the text already
            shown = "rate" if said.startswith(repr(rate)) else f"rate={reprlib.repr(rate)}"
            raise ValueError(f"{shown}: {said}") from None
    try:
        return Limit("type", type_, concurrency, parsed)  # type: ignore[arg-type]
    except ValueError as exc:
        said = str(exc).removeprefix("concurrency must be ")
        raise ValueError(f"concurrency={reprlib.repr(concurrency)}: {said}") from None


def whole_number(value: object) -> int | None:
    """An integer's value (int, IntEnum, numpy's ints), else None (bool, float, str)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_async(func: object) -> bool:
    call = inspect.getattr_static(type(func), "__call__", None)  # an async __call__
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (func, call)
    )


def _takes_context(func: Callable[..., Any]) -> bool:
    """Called as func(payload, ctx) when it names two positional parameters, or takes
    *args (a decorator's wrapper without functools.wraps passes both on); keyword-only
    options do not count."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the payload alone
        return False
    kinds = [p.kind for p in parameters]
    positional = kinds.count(inspect.Parameter.POSITIONAL_ONLY) + kinds.count(
        inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    return positional >= 2 or inspect.Parameter.VAR_POSITIONAL in kinds


def _check_call(type_: str, func: object, takes_context: bool) -> None:
    """The worker can call func for a result, checked at start: a function it cannot
    call failed every attempt with a TypeError, and an async or generator function
    returned an object that is not a result."""
    where = f"handler {type_!r}"
    if _is_async(func):
        raise ValueError(f"{where}: an async function; a handler is a plain function (def)")
    if inspect.isgeneratorfunction(func):
        raise ValueError(f"{where}: a generator function; a handler returns its result")
    if not callable(func):
        raise ValueError(f"{where}: {func!r} is not a function")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without one: nothing to check
        return
    try:
        signature.bind(*([None] * (2 if takes_context else 1)))
    except TypeError:
        raise ValueError(
            f"{where}: {getattr(func, '__qualname__', func)}{signature} cannot be called as "
            + ("f(payload, ctx)" if takes_context else "f(payload) or f(payload, ctx)")
        ) from None


# How alike a misspelt type and a known one must be to be offered (difflib's ratio).
CLOSE_TYPE_CUTOFF = 0.6


def unknown_type(type_: str, known: list[str]) -> UnknownJobType:
    """The refusal of a type no handler is registered for: the known types in its
    details and, when one is close, "did you mean 'send_email'?" in its message.

    The 422 listed every type, but a misspelling ("send_emial") was left for the
    user to find in the list by eye; the HTTP answer, the Lambda path and the CLI
    all show this message."""
    message = f"unknown job type {type_!r}"
    close = difflib.get_close_matches(type_, known, n=1, cutoff=CLOSE_TYPE_CUTOFF)
    if close:
        message += f"; did you mean {close[0]!r}?"
    else:
        message += (
            f"{UNKNOWN_TYPE_FIX_START}: register one with @handler({type_!r}) in a module "
            "on the server's SPOOL_HANDLERS (docs/handlers.md); details.known lists the "
            "types it has"
        )
    return UnknownJobType(message, {"type": type_, "known": known})


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self._loaded: set[str] = set()
        # Every registration so far: a SPOOL_HANDLERS module whose import moved it
        # not registered nothing (runtime.load_handlers warns of one that did not).
        self.registrations = 0
        # type -> the module whose import registers it, imported on first use (defer()).
        self._deferred: dict[str, str] = {}
        self._deferred_lock = threading.RLock()
        # The thread importing a deferred module: its handlers yield to types taken.
        self._yielding: int | None = None
        # type -> the module run that registered it (_module_run): a reload starts another.
        self._runs: dict[str, object] = {}

    def handler(
        self,
        type_: str,
        *,
        payload: type[BaseModel] | None = None,
        max_attempts: int | None = None,
        backoff: RetryPolicy | tuple[float, float] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        admit: AdmitFunc | None = None,
        concurrency: int | None = None,
        rate: str | Rate | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register a function as the handler for a job type.

        backoff is a RetryPolicy or a (base, cap) pair in seconds; max_attempts
        overrides the policy's own; admit(payload, tenant) refuses, at enqueue,
        payloads the tenant may not ask for. concurrency (jobs of this type
        running at once) and rate ('10/s': starts per window) hold across every
        worker; a job they hold back waits without spending an attempt.
        """
        if callable(type_):  # `@handler` bare: the function came where the type goes
            example = f'"{getattr(type_, "__name__", "TYPE")}"'
            raise ValueError(bare_decorator("handler", type_, example))
        where = f"handler {type_!r}"
        try:  # RetryPolicy's and Limit's own refusals, said of this handler
            policy = _policy(backoff, max_attempts)
            limit = _limit(type_, concurrency, rate)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not timeout > 0  # NaN is neither > 0 nor <= 0
            or not finite(timeout)
        ):
            raise ValueError(f"{where}: timeout must be a positive, finite number of seconds")
        _check_timeout_bound(type_, timeout)
        if admit is not None and not callable(admit):
            raise ValueError(f"{where}: admit={admit!r}: a function (payload, tenant)")
        priority = _check_declaration(type_, payload, queue, priority)

        def register(func: HandlerFunc) -> HandlerFunc:
            takes_context = _takes_context(func)
            self.register(
                HandlerSpec(
                    type=type_,
                    func=func,
                    payload_model=payload,
                    retry=policy,
                    timeout=timeout,
                    queue=queue,
                    priority=priority,
                    takes_context=takes_context,
                    admit=admit,
                    limit=limit,
                )
            )
            return func

        return register

    def register(self, spec: HandlerSpec) -> None:
        """Two functions under one job type is a mistake to report, not to settle
        quietly: the one imported last used to win, so which ran depended on the
        order of SPOOL_HANDLERS. The same function again (a module imported twice,
        or reloaded) replaces itself; a built-in imported after a handler that took
        its name yields to it (see defer)."""
        priority = _check_declaration(spec.type, spec.payload_model, spec.queue, spec.priority)
        _check_timeout_bound(spec.type, spec.timeout)  # a spec made or replaced in code too
        if type(spec.priority) is not int:  # an IntEnum: stores write the plain number
            spec = dataclasses.replace(spec, priority=priority)
        _check_call(spec.type, spec.func, spec.takes_context)
        existing = self._specs.get(spec.type)
        if existing is not None and self._another(spec.type, existing.func, spec.func):
            if self._yielding == threading.get_ident():
                return
            first, second = _where(existing.func), _where(spec.func)
            if first == second:  # one name, two definitions: say where each is
                first += f" (line {(_line(existing.func) or ('', 0))[1]})"
                second += f" (line {(_line(spec.func) or ('', 0))[1]})"
            raise ValueError(
                f"job type {spec.type!r} is registered twice: by {first} "
                f"and by {second}; give one of them another type"
            )
        self.registrations += 1
        self._specs[spec.type] = spec
        self._runs[spec.type] = _module_run(spec.func)

    def _another(self, type_: str, registered: Callable[..., Any], new: Callable[..., Any]) -> bool:
        """Is `new` another function than `registered`, rather than the same one again
        (its module imported twice, or reloaded, even after an edit that moved it)?"""
        if _where(registered) != _where(new):
            return True
        same_run = _module_run(new) is self._runs.get(type_)
        return same_run and _line(registered) != _line(new)

    def get(self, type_: str) -> HandlerSpec:
        spec = self._specs.get(type_)
        if spec is None and type_ in self._deferred:
            self._import_deferred(self._deferred[type_])
            spec = self._specs.get(type_)
        if spec is None:
            raise unknown_type(type_, self.types())
        return spec

    def limits(self) -> tuple[Limit, ...]:
        """The limits declared beside the loaded handlers.

        Deferred modules (the built-ins, imported on their first job) are not imported
        for this: a worker's start-up must not pay for smtplib, ssl and Pillow. They
        declare no limits (tests/test_limits_worker.py holds them to that); an operator
        limits them with SPOOL_LIMITS."""
        return tuple(spec.limit for spec in self.loaded_specs() if spec.limit is not None)

    def types(self) -> list[str]:
        self._import_all_deferred()
        return sorted(self._specs)

    def specs(self) -> list[HandlerSpec]:
        return [self._specs[t] for t in self.types()]

    def known_types(self, hidden: frozenset[str] = frozenset()) -> set[str]:
        """Every type this registry can run, loaded or deferred, importing nothing;
        `hidden`: modules whose handlers do not count (HandlerView's)."""
        loaded = {
            t for t, s in self._specs.items() if getattr(s.func, "__module__", None) not in hidden
        }
        return loaded | {t for t, module in self._deferred.items() if module not in hidden}

    def loaded_specs(self) -> list[HandlerSpec]:
        """The handlers registered so far, without importing deferred modules."""
        return [self._specs[t] for t in sorted(self._specs)]

    def max_timeout(self) -> float:
        return max((s.timeout for s in self.specs()), default=DEFAULT_TIMEOUT)

    def defer(self, modules_by_type: Mapping[str, str]) -> None:
        """Know which module registers each type, and import it only when the type is
        first asked for (or the whole list is).

        Why: the built-in handlers' modules import smtplib, ssl, http.client and the
        blob store; a Lambda cold start that answers GET /status, or enqueues one
        type, should not pay for all of them. A type already registered (say by a
        SPOOL_HANDLERS module under a built-in's name) keeps its handler: importing
        the built-in module later does not replace it, as when built-ins loaded first.
        """
        for type_, module in modules_by_type.items():
            if module not in self._loaded and type_ not in self._specs:
                self._deferred.setdefault(type_, module)

    def _import_deferred(self, module: str) -> None:
        with self._deferred_lock:
            if module not in self._deferred.values():
                return  # another thread imported it meanwhile
            before = dict(self._specs)
            self._yielding = threading.get_ident()
            try:
                self.load((module,))
            finally:
                self._yielding = None
                self._specs.update(before)  # what was registered first wins (see defer)
                for type_ in [t for t, m in self._deferred.items() if m == module]:
                    del self._deferred[type_]

    def _import_all_deferred(self) -> None:
        while self._deferred:
            with self._deferred_lock:
                pending = next(iter(self._deferred.values()), None)
            if pending is not None:
                self._import_deferred(pending)

    def load(self, modules: Iterable[str]) -> None:
        """Import handler modules (SPOOL_HANDLERS); importing registers their handlers."""
        for name in modules:
            name = name.strip()
            if name and name not in self._loaded:
                importlib.import_module(name)
                self._loaded.add(name)


registry = Registry()
handler = registry.handler
