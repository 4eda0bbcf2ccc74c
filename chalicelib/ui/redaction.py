"""Secrets in payloads, results and errors, masked before the dashboard shows them.

Payloads are attacker-controlled and often carry credentials (an http_request
job's Authorization header, an SMTP password). A value under a key that names
a credential is replaced whole; every string is masked by shape too (`Bearer ...`,
`scheme://user:password@`, `password=...`). Never by the configured secrets' values
(the log redactor's other half): a tenant who puts 20,000 guesses in a payload and
reads it back here would learn which of them are other tenants' keys or the
operator's passwords, without one failed authentication.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from chalicelib.log_redact import redactor
from chalicelib.redact import MASK

# Keys whose value is a credential, however spelt (Authorization, api_key, X-Api-Key,
# smtp_password, clientSecret, refresh-token, ...).
SECRET_KEY = re.compile(
    r"auth|passw|passwd|pwd|passphrase|secret|token|api[-_]?key|access[-_]?key|cookie|"
    r"credential|private[-_]?key|signature|session[-_]?(?:id|key)|jwt"
    # Short names only whole, or as a part between _ and -: "pass", "db_pass",
    # "pass_word" and "pw", but not "passenger" or "pwm".
    r"|^(?:pw|pin|otp|session|sid)$|(?:^|[-_])pass(?:$|[-_])",
    re.IGNORECASE,
)
# {"name": "Authorization", "value": "Basic ..."}: the header and env-var lists of HAR,
# Kubernetes and AWS name the credential in one field and hold it in another.
NAME_FIELDS = ("name", "key", "header", "Name", "Key")
VALUE_FIELDS = ("value", "Value")
MAX_DEPTH = 64  # deeper than this is shown as a marker, not walked (no RecursionError)
DEEPER = "[nested too deep to show]"
# Values (objects, arrays, strings, numbers...) the job view shows of one payload or
# result. A 256 KiB payload can hold 60,000 of them (`[[],[],...]`), and each costs a
# Python call here: unbounded, one tenant's job view cost a tenth of a second of server
# CPU per read, and reads are not rate-limited. Past this many, an array ends with a
# MORE_ITEMS marker and an object with a MORE_KEYS entry; what is cut is never shown,
# so nothing unmasked leaves either way. The whole value stays readable through
# GET /status/{id}, which sends the tenant's own payload as stored.
SHOWN_VALUES = 5_000
MORE_ITEMS = "[{} more items not shown]"
MORE_KEYS = "[more keys not shown]"
_NAMES = frozenset(NAME_FIELDS)


def mask(value: Any, shown: int = SHOWN_VALUES) -> Any:
    """A JSON value with credentials masked; the shape is kept so people can read it.

    At most `shown` values are walked (SHOWN_VALUES says why); the rest is cut."""
    return _Walk(shown).value(value, 0)


class _Walk:
    """One masking walk and the values it may still show (`left`)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def value(self, value: Any, depth: int) -> Any:
        self.left -= 1
        if isinstance(value, str):
            return redactor.shapes(value)
        if isinstance(value, dict):
            return DEEPER if depth >= MAX_DEPTH else self._object(value, depth)
        if isinstance(value, list):
            return DEEPER if depth >= MAX_DEPTH else self._pairs(value, depth)
        return value

    def _object(self, item: dict[Any, Any], depth: int) -> dict[Any, Any]:
        # The set test is one C call; most objects name no NAME_FIELDS at all.
        named = not _NAMES.isdisjoint(item) and _names_a_secret(item)
        shown: dict[Any, Any] = {}
        for k, v in item.items():
            if self.left <= 0:
                shown[MORE_KEYS] = f"{len(item) - len(shown)} more"
                break
            if v is not None and (_secret_key(str(k)) or (named and k in VALUE_FIELDS)):
                self.left -= 1
                shown[k] = MASK
            else:
                shown[k] = self.value(v, depth + 1)
        return shown

    def _pairs(self, items: list[Any], depth: int) -> list[Any]:
        """Lists, with ["Authorization", "Basic x"]-style header pairs masked too."""
        if (
            len(items) == 2
            and isinstance(items[0], str)
            and isinstance(items[1], str)
            and _secret_key(items[0])
        ):
            self.left -= 2
            return [items[0], MASK]
        shown: list[Any] = []
        for v in items:
            if self.left <= 0:
                shown.append(MORE_ITEMS.format(len(items) - len(shown)))
                break
            shown.append(self.value(v, depth + 1))
        return shown


def _secret_key(name: str) -> bool:
    """Whether a key names a credential. Short names are cached, as payloads repeat
    their keys; a long one is not, so the cache holds at most 4096 x CACHED_NAME
    characters whatever tenants send."""
    if len(name) > CACHED_NAME:
        return SECRET_KEY.search(name) is not None
    return _short_secret_key(name)


CACHED_NAME = 64


@lru_cache(maxsize=4096)
def _short_secret_key(name: str) -> bool:
    return SECRET_KEY.search(name) is not None


def _names_a_secret(item: dict[Any, Any]) -> bool:
    return any(
        isinstance(item.get(field), str) and _secret_key(item[field]) for field in NAME_FIELDS
    )


def text(value: str | None) -> str | None:
    return None if value is None else redactor.shapes(value)
