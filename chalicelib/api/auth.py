"""API keys: tenant keys for the job routes, operator keys for /metrics.

SPOOL_API_KEYS is a comma-separated list of `key=tenant` pairs, or, so that a
deployed config holds no secret, `sha256:<hex digest of the key>=tenant`.
Keys are random tokens, not passwords, so one SHA-256 is the right hash: what
matters is comparing digests in constant time (hmac.compare_digest) and
checking every entry, so timing reveals neither a prefix nor which entry
matched.

/metrics names every tenant's queues, so a tenant key does not open it: it
takes an operator key from SPOOL_METRICS_KEYS (the same forms, with the
`=name` optional: `key`, `sha256:<hex>`, `key=prometheus`), sent in X-API-Key
or as `Authorization: Bearer <key>` (what Prometheus sends), or
SPOOL_METRICS_PUBLIC=true, the operator's choice to publish queue names.

A plain key of either list has at least MIN_KEY_LENGTH (16) characters, or the
list is refused where it is read (`spool serve` and `chalice local` at start, a
key list read from SSM on the request that reads it).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.config import NAME_PATTERN  # not the service's: `spool` words refusals with this
from chalicelib.errors import SpoolError, Unauthorized

if TYPE_CHECKING:
    from chalicelib.config import Settings

HASH_PREFIX = "sha256:"
API_KEYS = "SPOOL_API_KEYS"
METRICS_KEYS = "SPOOL_METRICS_KEYS"
OPERATOR = "operator"  # the name of an operator key listed without one
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# Visible ASCII only: what every HTTP stack carries in a header byte for byte.
# A key with a space or a non-ASCII letter would be accepted here and then
# never match what a client can send, so it is refused when the config is read.
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")

# A key shorter than this is refused when the config is read: keys are bearer secrets
# compared by digest, and a short one (`k`, `dev-key`) can be guessed. A sha256: entry
# is a digest, not the key, and is exempt. MAKE_KEY prints a 43-character key.
MIN_KEY_LENGTH = 16
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def short_key(name: str, setting: str, swapped: bool = False) -> str:
    """The refusal of a short key: names the entry's tenant (or name), never the key.
    An entry written tenant=key (`swapped`) names neither: its "tenant" is the key."""
    if swapped:
        return (
            f"an entry of {setting} reads as a key of fewer than {MIN_KEY_LENGTH} "
            "characters for a name as long as a key: entries are key=tenant, the key "
            "first (written tenant=key? swap the two)"
        )
    return (
        f"the key for {name} in {setting} is shorter than {MIN_KEY_LENGTH} characters, "
        f"which can be guessed: make one with `{MAKE_KEY}`"
    )


def _swapped(key: str, tenant: str) -> bool:
    """A short key before a name that would pass as a key: `default=dev-my-own-key`."""
    return len(key) < MIN_KEY_LENGTH <= len(tenant)


# Said on every 401 of a server with no keys at all (a fresh `chalice local`),
# so the first request tells the developer what to set.
NO_KEYS_HINT = (
    "this server has no API keys configured, so it refuses every request: set "
    f"{API_KEYS} to key=tenant pairs (e.g. {API_KEYS}=KEY=my-tenant, a KEY of at least "
    f"{MIN_KEY_LENGTH} characters: `{MAKE_KEY}` makes one) in the "
    "environment, or in .chalice/config.json under the stage's environment_variables, "
    "then send the key in the X-API-Key header; `spool serve` makes a dev key when none is set"
)
MISSING_KEY = "missing API key: send it in the X-API-Key header"
INVALID_KEY = "invalid API key"
# A tenant route's answer to a key no tenant has. Alone, "invalid API key" left a
# newcomer whose `spool serve` had restarted (a new dev key at each start) guessing;
# the command line said it (local/remote_cli.py), curl and the dashboard did not.
# "this server's API keys", not SPOOL_API_KEYS: the keys may come from an SSM
# parameter instead, whose path an unauthenticated caller is not told.
INVALID_TENANT_KEY = (
    f"{INVALID_KEY}: send one of this server's API keys in the X-API-Key header (the "
    "dev key a `spool serve` given no keys makes is new at each start: use the one it "
    "printed last)"
)


class Forbidden(SpoolError):
    """A valid key that this route does not accept (a tenant key on /metrics)."""

    code = "forbidden"
    status = 403


def digest(key: str) -> bytes:
    # surrogatepass: any str a request can carry hashes, none raises a 500.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def hashed_entry(key: str, tenant: str) -> str:
    """The production form of a key, safe to commit: `sha256:<hex>=tenant`."""
    return f"{HASH_PREFIX}{digest(key).hex()}={tenant}"


def is_hashed(key: str) -> bool:
    """Whether a config entry's key is a digest. `SHA256:` counts too: read as a
    plain key, a digest would become a password anyone reading the config knows."""
    return key[: len(HASH_PREFIX)].lower() == HASH_PREFIX


@dataclass(frozen=True)
class Keyring:
    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def parse(cls, spec: str, setting: str = API_KEYS, unnamed: str | None = None) -> Keyring:
        """Parse a key list; a malformed entry is a deployment error, raised loudly.

        With `unnamed`, an entry without "=" is a bare key given that name (operator
        keys); a key that holds "=" then needs its name. Errors name the setting and
        the tenant, never the key (they reach logs).
        """
        form = "key=tenant" if unnamed is None else "key, or key=name (a key with = needs =name)"
        entries: list[tuple[bytes, str]] = []
        owners: dict[bytes, str] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, tenant = item.rpartition("=")
            if not sep and unnamed is not None:
                key, sep, tenant = item, "=", unnamed
            key, tenant = key.strip(), tenant.strip()
            if not sep or not key or not re.fullmatch(NAME_PATTERN, tenant):
                raise ValueError(f"{setting} entries must be {form} (names: [A-Za-z0-9_.:-])")
            if is_hashed(key):
                hex_digest = key[len(HASH_PREFIX) :]
                if not _HEX64.fullmatch(hex_digest):
                    raise ValueError(f"a sha256: key in {setting} needs 64 hex digits")
                stored = bytes.fromhex(hex_digest)
            elif _KEY_CHARS.fullmatch(key):
                if len(key) < MIN_KEY_LENGTH:
                    raise ValueError(short_key(tenant, setting, swapped=_swapped(key, tenant)))
                stored = digest(key)
            else:
                raise ValueError(
                    f"the key for {tenant} in {setting} holds a space or a character that is "
                    "not visible ASCII, which an X-API-Key header cannot carry"
                )
            owner = owners.get(stored)
            if owner is None:
                owners[stored] = tenant
                entries.append((stored, tenant))
            elif owner != tenant:
                # Which one would win is an accident of order: refuse, never guess.
                raise ValueError(f"{setting} gives the same key to {owner} and to {tenant}")
        return cls(tuple(entries))

    def match(self, presented: str, offered: bytes | None = None) -> str | None:
        """The name owning this key, or None; every entry is compared, in constant time.
        `offered`: digest(presented), when the caller has it already."""
        if offered is None:
            offered = digest(presented)
        found: str | None = None
        for stored, tenant in self.entries:
            if hmac.compare_digest(stored, offered):
                found = tenant
        return found

    def tenant_for(self, presented: str | None, offered: bytes | None = None) -> str:
        """The tenant owning this key, or Unauthorized (the same answer for missing and wrong).
        `offered`: digest(presented), when the caller has it already."""
        if not self.entries:
            raise Unauthorized(NO_KEYS_HINT)
        if not presented:
            raise Unauthorized(MISSING_KEY)
        found = self.match(presented, offered)
        if found is None:
            raise Unauthorized(INVALID_TENANT_KEY)
        return found

    def __bool__(self) -> bool:
        return bool(self.entries)


@functools.lru_cache(maxsize=8)
def operator_keys(spec: str) -> Keyring:
    """SPOOL_METRICS_KEYS parsed once per distinct value, not once per scrape."""
    return Keyring.parse(spec, METRICS_KEYS, unnamed=OPERATOR)


def metrics_key(header: Callable[[str], str | None]) -> str | None:
    """The key a scraper sent: X-API-Key, else `Authorization: Bearer <key>`."""
    key = header("x-api-key")
    if key:
        return key
    # Blanks (space, tab) only, as around any header value: str.strip() also took a
    # no-break space or U+0085 off a token, so "Bearer <key>\xa0" opened /metrics.
    scheme, _, token = (header("authorization") or "").strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip(" \t") or None


def authorize_metrics(
    settings: Settings, tenants: Keyring, header: Callable[[str], str | None]
) -> None:
    """Let a /metrics request through, or raise 401 (no or unknown key) or 403 (a tenant key).

    `header` looks a request header up by lower-case name (ApiRequest.header).

    A key listed in both SPOOL_METRICS_KEYS and SPOOL_API_KEYS opens both: that is
    a single-tenant deployment's (or a dev server's) way to use one key.
    """
    if settings.metrics_public:
        return
    operators = operator_keys(settings.text(METRICS_KEYS))
    presented = metrics_key(header)
    how = (
        f"/metrics needs an operator key from {METRICS_KEYS}, sent in the X-API-Key header "
        "or as Authorization: Bearer"
        if operators
        else f"/metrics needs an operator key, and none is configured: set {METRICS_KEYS} "
        "(comma-separated keys, or sha256:<hex> digests) or SPOOL_METRICS_PUBLIC=true, "
        "which shows every queue name to anyone"
    )
    if not presented:
        raise Unauthorized(f"missing API key: {how}")
    if operators.match(presented) is not None:
        return
    if tenants.match(presented) is not None:
        raise Forbidden(
            f"a tenant's API key does not open /metrics, which shows every tenant's queues: {how}"
        )
    raise Unauthorized(f"{INVALID_KEY}: {how}")
