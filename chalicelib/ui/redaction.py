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


def mask(value: Any, depth: int = 0) -> Any:
    """A JSON value with credentials masked; the shape is kept so people can read it."""
    if isinstance(value, str):
        return redactor.shapes(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return DEEPER
        named = _names_a_secret(value)
        return {
            k: MASK
            if v is not None and (SECRET_KEY.search(str(k)) or (named and k in VALUE_FIELDS))
            else mask(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return DEEPER
        return _pairs(value, depth)
    return value


def _names_a_secret(item: dict[Any, Any]) -> bool:
    return any(
        isinstance(item.get(field), str) and SECRET_KEY.search(item[field]) for field in NAME_FIELDS
    )


def _pairs(items: list[Any], depth: int) -> list[Any]:
    """Lists, with ["Authorization", "Basic x"]-style header pairs masked too."""
    if (
        len(items) == 2
        and isinstance(items[0], str)
        and isinstance(items[1], str)
        and SECRET_KEY.search(items[0])
    ):
        return [items[0], MASK]
    return [mask(v, depth + 1) for v in items]


def text(value: str | None) -> str | None:
    return None if value is None else redactor.shapes(value)
