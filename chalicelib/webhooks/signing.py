"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec v1).

A delivery carries three headers: `webhook-id` (the delivery's id, the same on
every retry, so a receiver can drop duplicates), `webhook-timestamp` (Unix
seconds when this attempt was signed) and `webhook-signature`, a space-separated
list of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret
the tenant has in force: during a rotation both the new and the old secret
sign, so a receiver holding either one verifies every delivery.

Secrets are written `whsec_<base64>`; the bytes after the prefix are the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec asks for 24 to 64 random bytes
MAX_SECRET_BYTES = 64
VERSION = "v1"


def decode_secret(secret: str) -> bytes:
    """The key inside `whsec_<base64>`; ValueError saying what is wrong (never the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}"
        )
    return key


def new_secret() -> str:
    """A fresh secret for an operator to configure (docs/webhooks.md shows how)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the delivery with one key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def headers(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every key in force."""
    if not keys:
        raise ValueError("a webhook needs at least one secret to be signed")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
