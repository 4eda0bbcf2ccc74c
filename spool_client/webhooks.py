"""Verify a Spool completion webhook: the Standard Webhooks v1 signature.

Standard library only (hmac, hashlib, base64), so a receiver can use it
without the rest of the client, let alone the server:

    from spool_client.webhooks import WebhookVerificationError, verify

    try:
        event = verify(request.body, request.headers, "whsec_...")
    except WebhookVerificationError:
        return 401
    if seen(request.headers["webhook-id"]):   # at least once: drop duplicates
        return 200
    handle(event["type"], event["data"])       # job.succeeded / job.dead / job.cancelled

`secrets` may be one secret or several (during a rotation, give both the new
and the old one); a delivery passes when any `v1` signature in the header
matches any of them, compared in constant time, and its timestamp is within
`tolerance` seconds of now (replayed deliveries are refused).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable
from typing import Any, Protocol, cast

__all__ = ["DEFAULT_TOLERANCE", "WebhookVerificationError", "sign", "verify"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds, as the specification recommends
_SECONDS = re.compile(r"[0-9]{1,12}")  # Unix seconds, ASCII digits (up to the year 33658)


class HeaderItems(Protocol):
    """Headers with items(): a dict of str or bytes names, or http.server's
    email.message.Message (no Mapping, but it has items())."""

    def items(self) -> Iterable[tuple[Any, Any]]: ...


# What verify takes as headers, as frameworks hand them over: anything with items(), or
# (name, value) pairs such as ASGI's list of bytes pairs. Was `Mapping[str, str] | ...`:
# a typed receiver passing http.server's headers or a bytes dict failed mypy, though
# verify reads both.
Headers = HeaderItems | Iterable[tuple[Any, Any]]


class WebhookVerificationError(Exception):
    """The delivery is not authentic (or not fresh): answer it with a 4xx, never act on it."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    elif not isinstance(secret, str):
        kind = type(secret).__name__
        raise TypeError(f"a webhook secret is a str (whsec_...) or bytes, not {kind}")
    elif not secret.startswith(SECRET_PREFIX):
        raise WebhookVerificationError("a webhook secret starts with whsec_")
    else:
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise WebhookVerificationError(
                "a webhook secret is whsec_ followed by base64"
            ) from None
    if not key:  # "whsec_" + an unset variable: anyone could sign with an empty key
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, stamp: str, body: bytes) -> str:
    signed = f"{msg_id}.{stamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature Spool sends for this delivery (handy in tests)."""
    return _digest(_key(secret), msg_id, str(timestamp), body)


def _text(value: object) -> str:
    """A header name or value as text: frameworks that hand over raw bytes (ASGI) get
    them read as latin-1, as HTTP/1.1 defines; anything else is its str()."""
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


def _header(headers: Headers, name: str) -> str:
    # A mapping, or anything with items() (http.server's email.message.Message is no
    # Mapping: iterated as pairs it raised ValueError); ASGI hands over a list of pairs.
    items = getattr(headers, "items", None)
    pairs: Iterable[Any] = items() if callable(items) else cast("Iterable[Any]", headers)
    try:
        found = [(pair[0], pair[1]) for pair in pairs if len(pair) == 2]
    except (TypeError, ValueError):
        raise WebhookVerificationError("the headers are not name/value pairs") from None
    for key, value in found:
        if _text(key).lower() == name:
            text = _text(value)
            if not text.isascii():  # every Standard Webhooks header is ASCII
                raise WebhookVerificationError(f"the {name} header is not ASCII")
            return text
    raise WebhookVerificationError(f"the {name} header is missing")


def verify(
    body: bytes | str,
    headers: Headers,
    secrets: str | bytes | Iterable[str | bytes],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """Check the delivery and return its JSON body; WebhookVerificationError if it fails.

    `body` must be the raw request body, exactly as received (not re-serialized JSON).
    `headers` is a mapping (any case of the names) or (name, value) pairs, str or bytes,
    as frameworks hand them over. Whatever the headers hold, a delivery that does not
    verify raises WebhookVerificationError and nothing else; a `secrets` that is not
    str/bytes (or a list of them) is a TypeError, a mistake in the receiver's code.
    """
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not _SECONDS.fullmatch(stamp):  # not int(): it takes " 1_700_000_000 " and 10**400
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds")
    current = time.time() if now is None else now
    # Written so that a NaN now or tolerance refuses (every comparison with NaN is False).
    if not abs(current - int(stamp)) <= tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or too new (a replay?)")
    keys = [_key(secrets)] if isinstance(secrets, (str, bytes)) else [_key(s) for s in secrets]
    if not keys:
        raise WebhookVerificationError("no secret to verify with")
    expected = [_digest(key, msg_id, stamp, raw).encode() for key in keys]
    for given in signatures.split():
        version, _, _ = given.partition(",")
        if version != "v1":
            continue  # a later scheme this verifier does not know
        if any(hmac.compare_digest(given.encode(), want) for want in expected):
            try:
                return json.loads(raw)
            except (ValueError, RecursionError):
                raise WebhookVerificationError("the body is not JSON") from None
    raise WebhookVerificationError("no signature matches")
