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
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_TOLERANCE", "WebhookVerificationError", "sign", "verify"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds, as the specification recommends


class WebhookVerificationError(Exception):
    """The delivery is not authentic (or not fresh): answer it with a 4xx, never act on it."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookVerificationError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("a webhook secret is whsec_ followed by base64") from None


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature Spool sends for this delivery (handy in tests)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"the {name} header is missing")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secrets: str | bytes | Iterable[str | bytes],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """Check the delivery and return its JSON body; WebhookVerificationError if it fails.

    `body` must be the raw request body, exactly as received (not re-serialized JSON).
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a whole number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or too new (a replay?)")
    keys = [_key(secrets)] if isinstance(secrets, (str, bytes)) else [_key(s) for s in secrets]
    if not keys:
        raise WebhookVerificationError("no secret to verify with")
    expected = [sign(key, msg_id, timestamp, raw) for key in keys]
    for given in signatures.split():
        version, _, _ = given.partition(",")
        if version != "v1":
            continue  # a later scheme this verifier does not know
        if any(hmac.compare_digest(given.encode(), want.encode()) for want in expected):
            try:
                return json.loads(raw)
            except ValueError:
                raise WebhookVerificationError("the body is not JSON") from None
    raise WebhookVerificationError("no signature matches")
