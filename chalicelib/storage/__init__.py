"""Choose a store by URL. Backends are imported only when chosen, so `import app`
stays fast and the Lambda package never loads psycopg or SQLite code it does not use."""

from __future__ import annotations

from importlib import import_module
from urllib.parse import parse_qs, urlsplit

from chalicelib.clock import Clock
from chalicelib.storage.base import JobStore

DEFAULT_STORE_URL = "sqlite:///.spool/spool.db"

# scheme -> (module, factory function taking (url, clock))
_BACKENDS = {
    "memory": ("chalicelib.storage.memory", "from_url"),
    "sqlite": ("chalicelib.storage.sqlite", "from_url"),
    "postgres": ("chalicelib.storage.postgres", "from_url"),
    "postgresql": ("chalicelib.storage.postgres", "from_url"),
    "dynamodb": ("chalicelib.storage.dynamodb", "from_url"),
    "redis": ("chalicelib.storage.redis_store", "from_url"),
    "rediss": ("chalicelib.storage.redis_store", "from_url"),
}


def open_store(url: str = DEFAULT_STORE_URL, clock: Clock | None = None) -> JobStore:
    from chalicelib.config import ConfigError  # here: config imports this module
    from chalicelib.redact import redact_url

    module_name, factory = _BACKENDS[store_scheme(url)]
    module = import_module(module_name)
    try:
        store: JobStore = getattr(module, factory)(url, clock)
    except ValueError as exc:
        # A malformed option in the URL (pool_max=0, durability=bogus): the operator's
        # to fix, said as such, not an "unexpected error".
        raise ConfigError(f"SPOOL_STORE_URL {redact_url(url)!r}: {exc}") from exc
    return store


def store_scheme(url: str) -> str:
    """The URL's store kind; ConfigError naming the ones there are if it names none."""
    from chalicelib.config import ConfigError
    from chalicelib.redact import redact_url

    try:
        scheme = urlsplit(url).scheme.split("+", 1)[0]
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [ in the host
        raise ConfigError(f"SPOOL_STORE_URL {redact_url(url)!r}: {exc}") from exc
    if scheme not in _BACKENDS:
        known = ", ".join(f"{name}://" for name in sorted(_BACKENDS))
        shown = redact_url(url)
        what = f"unknown store URL scheme {scheme!r}" if scheme else "a store URL needs a scheme"
        raise ConfigError(
            f"SPOOL_STORE_URL {shown!r}: {what}. Use one of {known} "
            f"(for example {DEFAULT_STORE_URL})"
        )
    return scheme


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory:"""
    parts = urlsplit(url)
    if parts.netloc:  # sqlite://name.db: the name parsed as a host, the path empty
        raise ValueError(
            f"a SQLite URL has three slashes before a relative path (sqlite:///"
            f"{parts.netloc}{parts.path}) and four before an absolute one (sqlite:////abs/x.db)"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return path or ".spool/spool.db", options
