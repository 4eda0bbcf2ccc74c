"""Job ids: 128 random bits, so an id reveals nothing and cannot be guessed."""

from __future__ import annotations

import secrets

ID_PREFIX = "j_"


def new_job_id() -> str:
    return ID_PREFIX + secrets.token_hex(16)


def new_lease_token() -> str:
    return secrets.token_hex(8)


def looks_like_job_id(value: str) -> bool:
    body = value[len(ID_PREFIX) :]
    return (
        value.startswith(ID_PREFIX)
        and len(body) == 32
        and all(c in "0123456789abcdef" for c in body)
    )
