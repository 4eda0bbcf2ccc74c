"""API keys and tenants.

SPOOL_API_KEYS is a comma-separated list of `key=tenant` pairs, or, so that a
deployed config holds no secret, `sha256:<hex digest of the key>=tenant`.
Keys are random tokens, not passwords, so one SHA-256 is the right hash: what
matters is comparing digests in constant time (hmac.compare_digest) and
checking every entry, so timing reveals neither a prefix nor which entry
matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from chalicelib.errors import Unauthorized
from chalicelib.service import NAME_PATTERN

HASH_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def hashed_entry(key: str, tenant: str) -> str:
    """The production form of a key, safe to commit: `sha256:<hex>=tenant`."""
    return f"{HASH_PREFIX}{digest(key).hex()}={tenant}"


@dataclass(frozen=True)
class Keyring:
    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse SPOOL_API_KEYS; a malformed entry is a deployment error, raised loudly."""
        entries: list[tuple[bytes, str]] = []
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, tenant = item.rpartition("=")
            if not sep or not key or not re.fullmatch(NAME_PATTERN, tenant):
                raise ValueError(
                    "SPOOL_API_KEYS entries must be key=tenant (tenant: [A-Za-z0-9_.:-])"
                )
            if key.startswith(HASH_PREFIX):
                hex_digest = key[len(HASH_PREFIX) :].lower()
                if not _HEX64.match(hex_digest):
                    raise ValueError("a sha256: key in SPOOL_API_KEYS needs 64 hex digits")
                entries.append((bytes.fromhex(hex_digest), tenant))
            else:
                entries.append((digest(key), tenant))
        return cls(tuple(entries))

    def tenant_for(self, presented: str | None) -> str:
        """The tenant owning this key, or Unauthorized (the same answer for missing and wrong)."""
        if not presented:
            raise Unauthorized("missing API key: send it in the X-API-Key header")
        offered = digest(presented)
        found: str | None = None
        for stored, tenant in self.entries:
            if hmac.compare_digest(stored, offered):
                found = tenant
        if found is None:
            raise Unauthorized("invalid API key")
        return found

    def __bool__(self) -> bool:
        return bool(self.entries)
