"""The HTTP edge's settings, checked before anything is served.

`spool serve` builds the edge (keys, result cache, long-poll caps, limits, metrics)
before its banner, so a malformed SPOOL_API_KEYS stops it with one line. `chalice
local` built it on the first request instead: it started, said nothing, and then
answered every request, /health too, 503 `misconfigured`. `value_refusal` is the
same check for a process that is about to serve app.py without `spool`; app.py
calls it under `chalice local` only (settings_catalog.refuse_under_chalice_local),
never on Lambda, where a cold start must not pay for it.

The edge is built on a memory store in place of the one SPOOL_STORE_URL names: a
check of settings opens no store (and creates no SQLite file). The URL itself is
checked as far as it can be without connecting: its scheme, and its options where
the store reads them from the URL alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.api.routes import Edge
    from chalicelib.config import Settings

FIX = "Fix the variable and start again"


def value_refusal(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(problem, fix) for the first setting the HTTP edge would refuse, or None."""
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime

    try:
        settings = Settings.from_env(environ)
        check_store_url(settings.store_url)
        check_local_server(settings)
        if not has_keys(settings):
            refuse_server_keys_in_the_client_variable(settings)
        rt = build_runtime(dataclasses.replace(settings, store_url="memory://"))
        try:
            check_edge(rt)
        finally:
            rt.close()
    except ValueError as exc:  # ConfigError, or a parser's ValueError naming the variable
        from chalicelib.runtime import HandlerModuleError

        # A module's refusal says its own fix ("Fix the module; see docs/handlers.md").
        return " ".join(str(exc).split()), "" if isinstance(exc, HandlerModuleError) else FIX
    return None


def check_local_server(settings: Settings) -> None:
    """The settings `chalice local`'s server reads (chalice_local_http.install): a
    malformed SPOOL_HTTP_MAX_HEADER_BYTES or SPOOL_HTTP_*_TIMEOUT was a traceback
    there, where `spool serve` refuses it in one line (local/http_limits.py)."""
    from chalicelib.api.http import max_header_bytes
    from chalicelib.http_timeouts import HttpTimeouts

    max_header_bytes(settings)
    HttpTimeouts.from_settings(settings)


def has_keys(settings: Settings) -> bool:
    """Keys read from SSM at request time (chalicelib/api/key_source.py) are keys too."""
    from chalicelib.api.key_source import PARAMETER

    return bool(settings.api_keys.strip() or settings.text(PARAMETER))


CLIENT_KEY = "SPOOL_API_KEY"


def refuse_server_keys_in_the_client_variable(settings: Settings) -> None:
    """SPOOL_API_KEY=KEY=TENANT with no server keys: the server's keys were meant
    (README, Try it: `SPOOL_API_KEYS=dev-my-own-laptop-key=default make run`).
    SPOOL_API_KEY is a setting (the command line's and the client's key), so the
    misspelling check let it be: `spool serve` made a dev key as if none were given,
    and `chalice local` served with no keys, answering every request 401 without
    naming the variable. Both refuse it now (`spool serve` through local/serve.py,
    `chalice local` through value_refusal). A plain key there (the banner's export
    line, in the same shell) is the client's: left alone. The value is never shown."""
    import re

    from chalicelib.config import NAME_PATTERN, ConfigError

    key, sep, tenant = settings.text(CLIENT_KEY).strip().rpartition("=")
    if not (sep and key and re.fullmatch(NAME_PATTERN, tenant)):
        return
    raise ConfigError(
        f"{CLIENT_KEY} holds a key=tenant entry, but it is the key the command line and "
        "the Python client send; the server reads its keys from SPOOL_API_KEYS. "
        f"Give the entry as SPOOL_API_KEYS=KEY=TENANT (and {CLIENT_KEY}=KEY for "
        "the command line)"
    )


def check_edge(rt: object) -> Edge:
    """Build what app.py's routes build on their first request; raise ValueError.

    The one check of the edge's settings: `chalice local` (value_refusal above) and
    `spool serve` (local/serve.py) both run it. A refusal reads "NAME: reason": a
    reason that does not name its variable is given the name of the one checked.
    Returns the edge built: `spool serve` serves that one (routes.install) rather
    than build it again."""
    from chalicelib import limit_settings
    from chalicelib.api.auth import API_KEYS, METRICS_KEYS, Keyring, operator_keys
    from chalicelib.api.metric_labels import QueueLabels
    from chalicelib.api.routes import Edge
    from chalicelib.runtime import Runtime
    from chalicelib.webhooks import config as webhook_config

    assert isinstance(rt, Runtime)
    settings = rt.settings
    checks: tuple[tuple[str | None, Callable[[], object]], ...] = (
        (None, lambda: limit_settings.validate(settings)),  # SPOOL_LIMITS, the tenants'...
        (API_KEYS, lambda: Keyring.parse(settings.api_keys)),
        (METRICS_KEYS, lambda: operator_keys(settings.text(METRICS_KEYS))),
        ("SPOOL_METRICS_MAX_QUEUES", lambda: QueueLabels.from_settings(settings)),
        # Read by the edge only at the first enqueue with a callback_url: a malformed
        # one started the server, and that enqueue answered 500. Each names its own.
        # From SPOOL_WEBHOOKS_PARAMETER the tenants are read at the first enqueue instead.
        (None, lambda: webhook_config.validate(settings)),
        (None, lambda: built.append(Edge(rt))),  # cache, waits, webhooks: each names its own
    )
    built: list[Edge] = []
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            if name is None or "SPOOL_" in str(exc):  # it names its variable already
                raise
            raise ValueError(f"{name}: {exc}") from None
    return built[0]


def check_store_url(url: str) -> None:
    """The URL's scheme, and for SQLite and Postgres its options, without connecting."""
    from chalicelib.storage import sqlite_path, store_scheme

    scheme = store_scheme(url)
    if scheme == "sqlite":
        from chalicelib.storage.sqlite import synchronous_option

        _, options = sqlite_path(url)
        synchronous_option(options)
    elif scheme in ("postgres", "postgresql"):
        from chalicelib.storage.postgres import parse_url

        parse_url(url)
