"""Checks the built-in handlers (and webhooks, SPOOL_WEBHOOK_CA_FILE) run on their
settings, each failure naming its setting.

One `except ValueError` around all of a handler's settings reported "'bad host' is not
a host name" for either of two host-name settings, and a CA file that did not exist
passed the start-up check, to send every job that needed it dead at its first attempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from chalicelib import shell_paths

T = TypeVar("T")


def named(setting: str, check: Callable[[str], T], value: str) -> T:
    """`check(value)`, its ValueError prefixed with the setting's name."""
    try:
        return check(value)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if setting in message else f"{setting}: {message}") from None


def ca_file(path: str) -> str | None:
    """A CA bundle's path, which must name a readable file; None when unset."""
    if not path:
        return None
    if not os.path.isfile(path):
        unexpanded = shell_paths.refusal(path)
        if unexpanded is not None:  # ~/ca.pem: "not a file" did not say why
            raise ValueError(unexpanded)
        raise ValueError(f"{path!r} is not a file (a PEM bundle of CA certificates)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path!r} cannot be read by this process")
    return path
