"""Settings from SPOOL_* environment variables, read once per process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.storage import DEFAULT_STORE_URL


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


class ConfigError(ValueError):
    """A setting is wrong. The message names the variable and how to fix it, so a
    command line can print it as one line and a deployment fails where it is set."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    return _finite(name, raw, "a number of seconds") if raw else default


def _finite(name: str, raw: str, what: str) -> float:
    """`raw` as a finite float, or a ConfigError naming the variable."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    return value


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
        queues = _list(env.get("SPOOL_QUEUES"))
        return cls(
            store_url=env.get("SPOOL_STORE_URL") or DEFAULT_STORE_URL,
            handlers=_list(env.get("SPOOL_HANDLERS")),
            api_keys=env.get("SPOOL_API_KEYS", ""),
            metrics_public=_bool(env.get("SPOOL_METRICS_PUBLIC")),
            max_body_bytes=_int(env, "SPOOL_MAX_BODY_BYTES", 256 * 1024),
            max_batch=_int(env, "SPOOL_MAX_BATCH", 100),
            cache_size=_int(env, "SPOOL_CACHE_SIZE", 1000),
            cache_ttl=_float(env, "SPOOL_CACHE_TTL", 300),
            concurrency=_int(env, "SPOOL_CONCURRENCY", 8),
            lease_seconds=_float(env, "SPOOL_LEASE_SECONDS", 60),
            queues=queues or None,
            pushgateway_url=env.get("SPOOL_PUSHGATEWAY_URL") or None,
            demo_handlers=_bool(env.get("SPOOL_DEMO_HANDLERS")),
            extra={k: v for k, v in env.items() if k.startswith("SPOOL_")},
        )

    # Typed reads of handler settings kept in `extra`. They are strict (a typo in
    # a flag such as SPOOL_SMTP_STARTTLS must not silently mean "off") and raise
    # ValueError naming the variable, so a handler can report the misconfiguration.
    def text(self, name: str, default: str = "") -> str:
        value = self.extra.get(name, "").strip()
        return value or default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.extra.get(name, "").strip().lower()
        if not value:
            return default
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, not {value!r}")

    def number(
        self, name: str, default: float, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        raw = self.extra.get(name, "").strip()
        if not raw:
            return default
        value = _finite(name, raw, "a number")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError(f"{name} must be between {minimum} and {maximum}, not {raw}")
        return value

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.number(name, default, minimum, maximum)
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, not {value}")
        return int(value)

    def items(self, name: str) -> tuple[str, ...]:
        return _list(self.extra.get(name))
