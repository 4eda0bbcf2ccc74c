"""Settings from SPOOL_* environment variables, read once per process."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.number_text import too_small, underflows

# The store a command opens without SPOOL_STORE_URL. Kept here, not in chalicelib.storage
# (which re-exports it): importing the stores loads pydantic and the job models, and the
# settings are read by commands that open no store (`spool --help`, the remote commands).
DEFAULT_STORE_URL = "sqlite:///.spool/spool.db"


def _started_in() -> str:
    """The working directory as this module is first imported, at the process's start.

    Relative paths in settings (SPOOL_BLOB_DIR's default, .spool/blobs) mean the folder
    the command was started in for as long as it runs: a handler may os.chdir and not
    come back, and the next job must not find its files under that handler's folder.
    The SQLite store does the same by opening its file by absolute path once."""
    try:
        return os.getcwd()
    except OSError:  # started in a folder since deleted: relative paths stay relative
        return ""


STARTED_IN = _started_in()


class ConfigError(ValueError):
    """A setting is wrong. The message names the variable and how to fix it, so a
    command line can print it as one line and a deployment fails where it is set."""


# A flag's accepted values, as docs/settings.md lists them (any case). Anything else
# is refused: a typo such as `ture` must not silently mean "off".
FLAG_TRUE = ("1", "true", "yes", "on")
FLAG_FALSE = ("0", "false", "no", "off")
FLAG_VALUES = "true or false (also 1/0, yes/no, on/off)"

# The range of each number Settings.from_env reads. Outside it a value is not a
# smaller or larger setting but a broken one: a lease of 0 s buries every job unrun
# (each claim has already expired), a concurrency of 0 divides by zero, a body limit
# of -1 refuses even GET /health, a batch limit of 0 refuses every batch. Name ->
# (minimum, maximum, unit); the catalog (chalicelib/settings_catalog.py) says the same.
BOUNDS: Mapping[str, tuple[float, float, str]] = {
    # API Gateway's own limit is 10 MiB, and local/server.py buffers no more.
    "SPOOL_MAX_BODY_BYTES": (1024, 10 * 1024 * 1024, "bytes"),
    "SPOOL_MAX_BATCH": (1, 10_000, "jobs"),
    "SPOOL_CACHE_SIZE": (0, 1_000_000, "answers"),  # 0: no cache
    "SPOOL_CACHE_TTL": (0, 86_400, "seconds"),  # 0: no cache
    "SPOOL_CONCURRENCY": (1, 1024, "threads"),  # more: "can't start new thread"
    # A running worker renews its leases when two thirds are left, looking at least every
    # second (WorkerConfig.idle_poll): a shorter lease could lapse between two looks.
    "SPOOL_LEASE_SECONDS": (2, 86_400, "seconds"),
}

# Read only once a job or an SQS batch runs, so checked with the rest when the settings
# are read: a wrong one stops the cold start naming it, instead of failing every batch
# until the messages reach the DLQ. Name -> (minimum, maximum, whole number).
CHECKED_EARLY: Mapping[str, tuple[float, float, bool]] = {
    "SPOOL_HEARTBEAT_SECONDS": (0.1, 3600, False),
    "SPOOL_TRACEBACK_BYTES": (0, 64 * 1024, True),
    # SQS's own range starts at 0, but a Lambda trigger needs at least the function's
    # timeout, and the heartbeat that extends it needs a timeout to extend.
    "SPOOL_SQS_VISIBILITY_TIMEOUT": (1, 43_200, True),
}


def parse_flag(name: str, raw: str | None, default: bool = False) -> bool:
    """`raw` as a flag, or a ConfigError naming the variable and the accepted values."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in FLAG_TRUE:
        return True
    if value in FLAG_FALSE:
        return False
    raise ConfigError(f"{name} must be {FLAG_VALUES}, not {(raw or '').strip()!r}")


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


# A job type's, queue's or tenant's name. Kept here, the settings' leaf module, so that
# SPOOL_QUEUES is read by the rule enqueue applies (chalicelib/service.py re-exports it).
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000  # a job's priority, from a client or a handler
MAX_KEY_LENGTH = 200  # an idempotency key's characters (chalicelib/service.py KeyText)
QUEUE_NAME = re.compile(NAME_PATTERN)


def not_a_tenant(shown: str) -> str:
    """Why a settings entry for the tenant `shown` (already quoted for a message) is
    refused: SPOOL_API_KEYS gives keys tenants in the queue names' alphabet only, so
    an entry for any other name ("acme " with a stray space) would match no key."""
    return f"{shown} is no tenant's name: a key's tenant is 1-64 of [A-Za-z0-9_.:-]"


# Most queues one SPOOL_QUEUES names: DynamoDB's expression limits bound a claim's list
# (chalicelib/storage/dynamodb_schema.py, Expr.one_of). Every store keeps the same bound,
# so a worker's settings work on each; past it the worker refuses to start, naming it.
MAX_QUEUES_LISTED = 300


def _queues(value: str | None, setting: str = "SPOOL_QUEUES") -> tuple[str, ...]:
    """SPOOL_QUEUES: a worker given a name no job can carry claimed nothing, silently.
    SPOOL_METRICS_QUEUES is read by the same rule (queue_list)."""
    names = _list(value)
    if value and value.strip() and not names:  # ",," served every queue, silently
        unset = "serve every queue" if setting == "SPOOL_QUEUES" else "go back to the default"
        raise ConfigError(
            f"{setting}={value!r} names no queue; unset it to {unset}, or "
            "list the queues (comma-separated)"
        )
    for name in names:
        if not QUEUE_NAME.fullmatch(name):
            raise ConfigError(
                f"{setting} holds {name!r}, which no queue can be named: queue names are "
                "1-64 letters, digits and . _ : - (comma-separated)"
            )
    if setting == "SPOOL_QUEUES" and len(set(names)) > MAX_QUEUES_LISTED:
        raise ConfigError(
            f"SPOOL_QUEUES names {len(set(names))} queues: a worker claims from at most "
            f"{MAX_QUEUES_LISTED} (DynamoDB's limits on one expression); split them "
            "between workers, or unset it to serve every queue"
        )
    return names


def _shown(value: float) -> str:
    """A bound as a person writes it: 1024, 0.5, never 1.024e+03."""
    return str(int(value)) if float(value).is_integer() else f"{value}"


def range_text(minimum: float | None, maximum: float | None, unit: str = "") -> str:
    """The range a refusal names: between 1 and 1024 threads, at least 1, at most 60."""
    suffix = f" {unit}" if unit else ""
    if minimum is not None and maximum is not None:
        return f"between {_shown(minimum)} and {_shown(maximum)}{suffix}"
    if minimum is not None:
        return f"at least {_shown(minimum)}{suffix}"
    if maximum is not None:
        return f"at most {_shown(maximum)}{suffix}"
    return "a number"


def _bounded(name: str, value: float, raw: str) -> float:
    """`value` if BOUNDS allows it, else a ConfigError naming the variable and its range."""
    minimum, maximum, unit = BOUNDS[name]
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be {range_text(minimum, maximum, unit)}, not {raw}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    return int(_bounded(name, value, raw))


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    return _bounded(name, _finite(name, raw, "a number of seconds"), raw)


def _finite(name: str, raw: str, what: str) -> float:
    """`raw` as a finite float, or a ConfigError naming the variable."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    if underflows(raw, value):  # 1e-400: 0 where 0 means "off" (a TTL, a backoff)
        raise ConfigError(f"{name}: {too_small(raw)}; write 0 if you mean 0")
    return value


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """A text setting, spaces around it dropped and blank read as unset (Settings.text
    reads every other text setting through this too): "sqlite:///x.db " (a .env file's
    trailing space) made a store named "x.db " that no command without the space found,
    and "  " meant no scheme."""
    return (env.get(name) or "").strip() or default


@dataclass(frozen=True)
class Settings:
    store_url: str = DEFAULT_STORE_URL
    handlers: tuple[str, ...] = ()
    api_keys: str = ""
    metrics_public: bool = False
    max_body_bytes: int = 256 * 1024
    max_batch: int = 100
    cache_size: int = 1000
    cache_ttl: float = 300.0
    concurrency: int = 8
    lease_seconds: float = 60.0
    queues: tuple[str, ...] | None = None
    pushgateway_url: str | None = None
    # The demo handlers (echo, sleep, fail): for tests and `spool serve` on a
    # laptop, never offered by a deployment unless it asks (SPOOL_DEMO_HANDLERS).
    demo_handlers: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        queues = _queues(env.get("SPOOL_QUEUES"))
        settings = cls(
            store_url=_text(env, "SPOOL_STORE_URL", DEFAULT_STORE_URL),
            handlers=_list(env.get("SPOOL_HANDLERS")),
            api_keys=env.get("SPOOL_API_KEYS", ""),
            metrics_public=parse_flag("SPOOL_METRICS_PUBLIC", env.get("SPOOL_METRICS_PUBLIC")),
            max_body_bytes=_int(env, "SPOOL_MAX_BODY_BYTES", 256 * 1024),
            max_batch=_int(env, "SPOOL_MAX_BATCH", 100),
            cache_size=_int(env, "SPOOL_CACHE_SIZE", 1000),
            cache_ttl=_float(env, "SPOOL_CACHE_TTL", 300),
            concurrency=_int(env, "SPOOL_CONCURRENCY", 8),
            lease_seconds=_float(env, "SPOOL_LEASE_SECONDS", 60),
            queues=queues or None,
            pushgateway_url=_text(env, "SPOOL_PUSHGATEWAY_URL", "") or None,
            demo_handlers=parse_flag("SPOOL_DEMO_HANDLERS", env.get("SPOOL_DEMO_HANDLERS")),
            extra={k: v for k, v in env.items() if k.startswith("SPOOL_")},
        )
        settings.check_early()
        return settings

    def check_early(self) -> None:
        """Raise ConfigError for a wrong CHECKED_EARLY setting (see there)."""
        for name, (low, _, _) in CHECKED_EARLY.items():
            self.checked(name, low)

    def checked(self, name: str, default: float) -> float:
        """A CHECKED_EARLY setting within its range (a whole number where it must be)."""
        low, high, whole = CHECKED_EARLY[name]
        if whole:
            return self.integer(name, int(default), int(low), int(high))
        return self.number(name, default, low, high)

    # Typed reads of handler settings kept in `extra`. They are strict (a typo in
    # a flag such as SPOOL_SMTP_STARTTLS must not silently mean "off") and raise
    # ConfigError (a ValueError) naming the variable, so a handler can report the
    # misconfiguration.
    def text(self, name: str, default: str = "") -> str:
        return _text(self.extra, name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        return parse_flag(name, self.extra.get(name), default)

    def number(
        self, name: str, default: float, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        raw = self.extra.get(name, "").strip()
        if not raw:
            return default
        value = _finite(name, raw, "a number")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(f"{name} must be {range_text(minimum, maximum)}, not {raw}")
        return value

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.number(name, default, minimum, maximum)
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, not {value:g}")
        return int(value)

    def items(self, name: str) -> tuple[str, ...]:
        return _list(self.extra.get(name))

    def queue_list(self, name: str) -> tuple[str, ...]:
        """A list of queue names, each one a queue could be named (ConfigError if not)."""
        return _queues(self.extra.get(name), name)
