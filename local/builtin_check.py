"""The built-in handlers' settings, checked when a worker starts.

The built-ins are imported on their first job (a worker's start-up does not pay for
smtplib, ssl or Pillow), so a malformed SPOOL_SMTP_PORT used to surface only as
every `send_email` job going dead with "misconfigured", the worker looking healthy.
A handler whose settings an operator has set is checked here, before any job runs;
one left unset keeps its defaults and costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.config import Settings
from chalicelib.errors import PermanentError, UnknownJobType
from chalicelib.runtime import BUILTIN_HANDLERS, Runtime
from local.cli_errors import UsageError


def _smtp(settings: Settings) -> None:
    from chalicelib.builtin.email import SmtpSettings

    SmtpSettings.from_settings(settings)


def _http(settings: Settings) -> None:
    from chalicelib.builtin.http_request import policy_from

    policy_from(settings)


def _images(settings: Settings) -> None:
    from chalicelib import blobs
    from chalicelib.builtin.image_limits import Limits

    Limits.from_settings(settings)
    blobs.check_settings(settings)  # where its images are read and written


# A built-in's type, the beginnings of its settings' names, and what reads them as its
# jobs will (http_request's are named in full: other SPOOL_HTTP_* are the server's).
CHECKS: tuple[tuple[str, tuple[str, ...], Callable[[Settings], None]], ...] = (
    ("send_email", ("SPOOL_SMTP_",), _smtp),
    (
        "http_request",
        (
            "SPOOL_HTTP_ALLOWLIST",
            "SPOOL_HTTP_ALLOW_PRIVATE",
            "SPOOL_HTTP_CA_FILE",
            "SPOOL_HTTP_PORTS",
        ),
        _http,
    ),
    ("resize_image", ("SPOOL_IMAGE_", "SPOOL_BLOB_"), _images),
)


def check_builtin_settings(rt: Runtime) -> None:
    """UsageError for a built-in handler's setting its jobs could never run with. Only
    where the type is the built-in's: a SPOOL_HANDLERS module may have taken its name."""
    for type_, prefixes, check in CHECKS:
        if not any(name.startswith(prefixes) for name in rt.settings.extra):
            continue
        try:  # through the registry: it imports the built-in as a first job would
            spec = rt.registry.get(type_)
        except UnknownJobType:
            continue
        if getattr(spec.func, "__module__", "") != BUILTIN_HANDLERS.get(type_):
            continue
        try:
            check(rt.settings)
        except (PermanentError, ValueError) as exc:  # what a job would have died of
            raise UsageError(str(exc), "Fix the variable and start again") from None
